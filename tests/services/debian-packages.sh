#!/usr/bin/env bash
# Install the Debian packages that kidneyct's tests need, only those missing (quick when all are there).
# PostgreSQL runs the test database, Java 17 + Maven run the Kafka broker from Maven Central jars,
# dcmtk / dicom3tools / Orthanc are real DICOM peers for the listener's tests; chromium and
# chromium-driver run the review station's browser test, prometheus gives promtool for the alert rules.
set -euo pipefail

PACKAGES=(postgresql dcmtk dicom3tools orthanc maven openjdk-17-jre-headless python3-venv chromium chromium-driver prometheus)

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    SUDO=(sudo)
fi
echo "debian-packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
