# Hugging Face Docker Space (README front matter: sdk: docker, app_port: 8501) and local image.
# On Hugging Face, pip installs PyPI's default torch wheel for Linux, which is the CUDA build (a
# GPU Space uses it); built here by ../shared/tools/space-image.sh, PIP_FIND_LINKS points pip at the
# local CPU wheel (torch 2.13.0+cpu), which satisfies the same `torch==2.13.0` pin of requirements.txt.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG PIP_CERT
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# A bare Debian base has no Python; python:3.11-slim has it (then nothing is installed here).
# hadolint ignore=DL3008
RUN if ! python3 -m venv --help >/dev/null 2>&1; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH
WORKDIR /opt/build
COPY requirements.txt ./
# torch alone first (the largest layer, cached across code changes), then the rest, same pins
RUN pip install torch==2.13.0 && pip install -r requirements.txt

# Hugging Face runs Spaces as user 1000
RUN useradd --create-home --uid 1000 user
USER 1000
ENV HOME=/home/user \
    DERMO_MODELS_DIR=/home/user/app/assets/models
WORKDIR /home/user/app
COPY --chown=user:user . .

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4)"]
CMD ["python", "-m", "streamlit", "run", "app/main.py", "--server.port=8501", "--server.address=0.0.0.0"]
