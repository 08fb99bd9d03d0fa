# Runtime image, one per target: the cross toolchain, the target's Paddle Lite runtime library
# from its official release archive (sha256 checked), and ppocr_runner (docker/runtime/)
# built against it. /opt/runtime/{bin,lib} is the runtime part of the bundle: `toolkit images
# build --kind runtime --target T` copies it to TOOLKIT_HOME/runtime/T/.
# Build args come from targets/<T>.yaml (toolkit/images.py runtime_spec). Every download is
# checked against a sha256 given as a build arg; the build stops when one is missing.
# Legacy builder compatible (no BuildKit): no RUN --mount, no heredocs.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

ARG APT_MIRROR=http://deb.debian.org/debian
# ndk (android-*) or gcc (linux-*)
ARG TOOLCHAIN
ARG GCC_TRIPLE=
ARG NDK_VERSION=
ARG NDK_SHA256=
ARG ANDROID_API=21
ARG TARGET_OS
ARG TARGET_ARCH
ARG TARGET_ABI
ARG LITE_ARCHIVE_URL
ARG LITE_ARCHIVE_SHA256=
ARG LITE_LIB_PATH
ARG USER_UID=1000

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8

COPY extra-ca.crt /usr/local/share/ca-certificates/toolkit-extra.crt
# Build tools; stb_image.h (libstb-dev) decodes the test image; gcc targets get Debian's cross compilers.
RUN echo "deb ${APT_MIRROR} bookworm main" > /etc/apt/sources.list \
 && rm -f /etc/apt/sources.list.d/* \
 && apt-get update -q \
 && if [ "$TOOLCHAIN" = gcc ]; then CROSS="g++-${GCC_TRIPLE} gcc-${GCC_TRIPLE}"; elif [ "$TOOLCHAIN" = ndk ]; then CROSS=""; \
    else echo "TOOLCHAIN must be ndk or gcc, not '$TOOLCHAIN'" >&2; exit 1; fi \
 && apt-get install -y -q --no-install-recommends ca-certificates curl unzip xz-utils cmake make file libstb-dev $CROSS \
 && ( [ -s /usr/local/share/ca-certificates/toolkit-extra.crt ] || rm /usr/local/share/ca-certificates/toolkit-extra.crt ) \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Android NDK (android-* targets), from Google's repository, sha256 checked.
RUN if [ "$TOOLCHAIN" = ndk ]; then \
      if [ -z "$NDK_SHA256" ]; then echo "NDK_SHA256 is required to download android-ndk-${NDK_VERSION}" >&2; exit 1; fi; \
      curl -fsSL --retry 3 -o /tmp/ndk.zip "https://dl.google.com/android/repository/android-ndk-${NDK_VERSION}-linux-x86_64.zip" \
      && echo "${NDK_SHA256}  /tmp/ndk.zip" | sha256sum -c - \
      && unzip -q /tmp/ndk.zip -d /opt && mv /opt/android-ndk-${NDK_VERSION} /opt/ndk && rm /tmp/ndk.zip; \
    fi

# The target's Paddle Lite release archive (LITE_ARCHIVE_URL from targets/<T>.yaml), sha256 checked.
RUN if [ -z "$LITE_ARCHIVE_SHA256" ]; then echo "LITE_ARCHIVE_SHA256 is required: the runtime archive is never used unchecked" >&2; exit 1; fi \
 && curl -fsSL --retry 3 -o /tmp/lite.tgz "$LITE_ARCHIVE_URL" \
 && echo "${LITE_ARCHIVE_SHA256}  /tmp/lite.tgz" | sha256sum -c - \
 && mkdir -p /opt/lite && tar -xzf /tmp/lite.tgz -C /opt/lite && rm /tmp/lite.tgz \
 && test -f "/opt/lite/${LITE_LIB_PATH}" \
 && ln -s "$(dirname "$(dirname "/opt/lite/${LITE_LIB_PATH}")")" /opt/lite/cxx

COPY runtime/ /src/runner/
RUN set -e; mkdir -p /src/build /opt/runtime/bin /opt/runtime/lib; cd /src/build; \
    if [ "$TOOLCHAIN" = ndk ]; then \
      cmake /src/runner -DCMAKE_TOOLCHAIN_FILE=/opt/ndk/build/cmake/android.toolchain.cmake -DANDROID_ABI="${TARGET_ABI}" \
        -DANDROID_PLATFORM="android-${ANDROID_API}" -DANDROID_STL=c++_static -DLITE_DIR=/opt/lite/cxx -DSTB_DIR=/usr/include/stb; \
    else \
      case "$GCC_TRIPLE" in aarch64*) PROC=aarch64 ;; *) PROC=arm ;; esac; \
      cmake /src/runner -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=$PROC -DCMAKE_C_COMPILER=${GCC_TRIPLE}-gcc \
        -DCMAKE_CXX_COMPILER=${GCC_TRIPLE}-g++ -DLITE_DIR=/opt/lite/cxx -DSTB_DIR=/usr/include/stb; \
    fi; \
    make -j"$(nproc)"; \
    cp ppocr_runner /opt/runtime/bin/; cp "/opt/lite/${LITE_LIB_PATH}" /opt/runtime/lib/; \
    file /opt/runtime/bin/ppocr_runner | tee /opt/runtime/BUILD-INFO; \
    file /opt/runtime/bin/ppocr_runner | grep -Eq 'ARM|aarch64' \
    && echo "target ${TARGET_OS}-${TARGET_ARCH} (${TARGET_ABI}), Paddle Lite ${LITE_ARCHIVE_URL}" >> /opt/runtime/BUILD-INFO

RUN useradd --create-home --uid ${USER_UID} toolkit
USER toolkit
CMD ["cat", "/opt/runtime/BUILD-INFO"]
