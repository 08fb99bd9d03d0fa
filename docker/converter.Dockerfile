# Converter image, one per Paddle Lite version: paddle_lite_opt and Lite's x86 Python runtime
# (paddlelite==2.12 is a cp37-only wheel, so this image carries CPython 3.7).
# Built by `toolkit images build` (toolkit/images.py); the context holds extra-ca.crt (may be
# empty), wheels/ (may be empty) and, for PYTHON_FROM=prebuilt, python.tar.gz.
#
# Where Python 3.7 comes from, and why: Debian dropped it after buster, and buster is gone
# from deb.debian.org (archive.debian.org is not reachable everywhere); no registry ships a
# portable CPython 3.7 for this. So:
#   PYTHON_FROM=source   (default, for a user with internet) downloads the official
#                        Python-${PYTHON_VERSION}.tgz from python.org, checks PYTHON_SHA256
#                        (required: the build refuses without it) and compiles it.
#   PYTHON_FROM=prebuilt the context's python.tar.gz, a CPython 3.7 install tree that
#                        `toolkit images build` packs from the host's own Python 3.7 (e.g.
#                        pyenv's, compiled on the same Debian release as the base image);
#                        this is what builds without internet.
# Either way the interpreter lives in /opt/python, and opt runs in a venv on top of it.
# Legacy builder compatible (no BuildKit): no RUN --mount, no heredocs.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG PYTHON_FROM=source
ARG PYTHON_VERSION=3.7.17
ARG PYTHON_SHA256=
ARG LITE_PACKAGE=paddlelite==2.12
# numpy<2 (with numpy 2 Lite's outputs are silently NaN); 1.21.6 is the last cp37 release.
ARG NUMPY_PACKAGE=numpy==1.21.6
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_NO_INDEX=0
ARG APT_MIRROR=http://deb.debian.org/debian
ARG USER_UID=1000

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY extra-ca.crt /usr/local/share/ca-certificates/toolkit-extra.crt
RUN echo "deb ${APT_MIRROR} bookworm main" > /etc/apt/sources.list \
 && rm -f /etc/apt/sources.list.d/* \
 && apt-get update -q \
 && apt-get install -y -q --no-install-recommends ca-certificates libgomp1 libssl3 libffi8 zlib1g libbz2-1.0 \
      libsqlite3-0 liblzma5 libreadline8 libncursesw6 libuuid1 \
 && ( [ -s /usr/local/share/ca-certificates/toolkit-extra.crt ] || rm /usr/local/share/ca-certificates/toolkit-extra.crt ) \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# The prebuilt tree (an empty placeholder file when PYTHON_FROM=source).
COPY python.tar.gz /tmp/build/python.tar.gz
RUN set -e; \
    if [ "$PYTHON_FROM" = prebuilt ]; then \
      mkdir -p /opt/python && tar -xzf /tmp/build/python.tar.gz -C /opt/python; \
    elif [ "$PYTHON_FROM" = source ]; then \
      if [ -z "$PYTHON_SHA256" ]; then echo "PYTHON_SHA256 is required with PYTHON_FROM=source (the sha256 of Python-${PYTHON_VERSION}.tgz)" >&2; exit 1; fi; \
      apt-get update -q; \
      apt-get install -y -q --no-install-recommends curl build-essential libssl-dev libffi-dev zlib1g-dev libbz2-dev \
        libsqlite3-dev liblzma-dev libreadline-dev libncursesw5-dev uuid-dev; \
      curl -fsSL -o /tmp/build/Python.tgz "https://www.python.org/ftp/python/${PYTHON_VERSION}/Python-${PYTHON_VERSION}.tgz"; \
      echo "${PYTHON_SHA256}  /tmp/build/Python.tgz" | sha256sum -c -; \
      tar -xzf /tmp/build/Python.tgz -C /tmp/build; \
      cd /tmp/build/Python-${PYTHON_VERSION}; \
      ./configure --prefix=/opt/python --enable-shared LDFLAGS=-Wl,-rpath,/opt/python/lib >/dev/null; \
      make -j"$(nproc)" >/dev/null; make install >/dev/null; \
      apt-get purge -y -q --auto-remove curl build-essential libssl-dev libffi-dev zlib1g-dev libbz2-dev \
        libsqlite3-dev liblzma-dev libreadline-dev libncursesw5-dev uuid-dev; \
      rm -rf /var/lib/apt/lists/*; \
    else echo "PYTHON_FROM must be prebuilt or source" >&2; exit 1; fi; \
    rm -rf /tmp/build; \
    echo /opt/python/lib > /etc/ld.so.conf.d/toolkit-python.conf && ldconfig; \
    /opt/python/bin/python3.7 -c "import ssl, zlib, ctypes, sys; assert sys.version_info[:2] == (3, 7), sys.version; print(sys.version)"

COPY wheels/ /tmp/build/wheels/
RUN /opt/python/bin/python3.7 -m venv /opt/venv \
 && if [ "$PIP_NO_INDEX" = 1 ]; then SRC="--no-index"; else SRC="--index-url $PIP_INDEX_URL ${PIP_EXTRA_INDEX_URL:+--extra-index-url $PIP_EXTRA_INDEX_URL}"; fi \
 && /opt/venv/bin/pip install -q $SRC --find-links /tmp/build/wheels "$LITE_PACKAGE" "$NUMPY_PACKAGE" \
 && rm -rf /tmp/build \
 && /opt/venv/bin/python -c "import paddlelite.lite; print('paddlelite ok')" \
 && test -x /opt/venv/bin/paddle_lite_opt

RUN useradd --create-home --uid ${USER_UID} toolkit && mkdir -p /tmp/home && chmod 1777 /tmp/home
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp/home
USER toolkit
WORKDIR /tmp/home
CMD ["paddle_lite_opt", "--help"]
