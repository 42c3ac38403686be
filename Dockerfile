# The kidneyct image for docker-compose.yml. EXTRAS=cpu (tensorflow-cpu) or EXTRAS=gpu
# (TensorFlow with its CUDA libraries; the host needs the NVIDIA container toolkit).
# BASE_IMAGE: the tests build on a local stand-in (tests/images/build.sh); users keep the default.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG EXTRAS=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so a code change does not reinstall TensorFlow; an empty README stands in for
# the real one (package metadata only), so editing the README does not either.
COPY pyproject.toml ./
RUN mkdir -p kidneyct storage ingest classifier training migrations && touch README.md \
    && pip install --no-compile ".[${EXTRAS}]" && pip uninstall -y kidneyct
COPY README.md ./
COPY common ./common
COPY kidneyct ./kidneyct
COPY storage ./storage
COPY ingest ./ingest
COPY classifier ./classifier
COPY training ./training
COPY migrations ./migrations
COPY delivery ./delivery
COPY review ./review
RUN pip install --no-deps ".[${EXTRAS}]"

RUN useradd --system --uid 10001 --home-dir /var/lib/kidneyct kidneyct \
    && mkdir -p /var/lib/kidneyct/archive /var/lib/kidneyct/models /var/lib/kidneyct/runs \
    && chown -R kidneyct /var/lib/kidneyct
USER kidneyct
ENV KIDNEYCT_DATA_DIR=/var/lib/kidneyct
VOLUME ["/var/lib/kidneyct"]
EXPOSE 11112 9100

ENTRYPOINT ["kidneyct"]
CMD ["--help"]
