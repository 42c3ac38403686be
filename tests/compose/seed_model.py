"""Register a tiny random-weight model as the active version (run in the kidneyct image by
`docker-compose run --rm seed-model`, tests/compose/docker-compose.test.yml): workers need an active
model, and training one would cost minutes that this test does not need to spend."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import keras

from classifier.model.artifact import save_artifact
from classifier.model.network import build_model
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version, register_model_version

VERSION = "compose-tiny-1"


def main() -> None:
    directory = Path(os.environ["KIDNEYCT_MODEL_DIR"]) / VERSION
    keras.utils.set_random_seed(7)
    card = save_artifact(
        build_model(image_size=32, weights=None), directory, {"version": VERSION, "metrics": {}}
    )
    engine = make_engine(os.environ["KIDNEYCT_DATABASE_URL"])
    now = dt.datetime.now(dt.UTC)
    with make_session_factory(engine).begin() as session:
        register_model_version(
            session,
            version=VERSION,
            artifact_uri=str(directory),
            sha256=card.weights_sha256,
            card={"image_size": card.image_size},
            metrics={},
            manifest_hash=None,
            now=now,
        )
        activate_model_version(session, version=VERSION, now=now)
    engine.dispose()
    print(f"seed_model: {VERSION} active at {directory}")


if __name__ == "__main__":
    main()
