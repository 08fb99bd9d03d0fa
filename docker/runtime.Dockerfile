# Runtime image, one per target: Paddle Lite's light runtime built from its pinned source,
# OpenCV core+imgproc and Clipper built statically, and ppocr_runner (docker/runtime/) linked
# against them, all with the target's cross toolchain. The final stage holds only
# /opt/runtime/{bin,lib,BUILD-INFO.json}: `toolkit images build --kind runtime --target T`
# copies it to TOOLKIT_HOME/runtime/T/, which bundles carry.
#
# Build args come from targets/<T>.yaml (toolkit/runners/images.py runtime_spec). The build
# context holds what the host fetched and checked (toolkit never hands the build an unchecked
# file; each is checked again here):
#   lite-src/      a shallow clone of the pinned tag (from --lite-source DIR), or empty: then the
#                  repository URL is cloned here (needs internet)
#   lite-archive/  a release archive, for runtime.kind=archive (else empty)
#   ndk/           the Android NDK zip, for android-* (else empty)
#   opencv/ clipper/  their source archives
# Legacy builder compatible (no BuildKit): no RUN --mount, no heredocs.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE} AS build

ARG APT_MIRROR=http://deb.debian.org/debian
# ndk (android-*) or gcc (linux-*)
ARG TOOLCHAIN
ARG GCC_TRIPLE=
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONWARNINGS=ignore

COPY extra-ca.crt /usr/local/share/ca-certificates/toolkit-extra.crt
# Build tools (Lite's cmake runs Python scripts, asks git for its version and wants a host compiler); stb_image.h
# (libstb-dev) and nlohmann/json (nlohmann-json3-dev) are header-only; gcc targets get
# Debian's cross compilers.
RUN echo "deb ${APT_MIRROR} bookworm main" > /etc/apt/sources.list \
 && rm -f /etc/apt/sources.list.d/* \
 && apt-get update -q \
 && if [ "$TOOLCHAIN" = gcc ]; then CROSS="g++-${GCC_TRIPLE} gcc-${GCC_TRIPLE}"; elif [ "$TOOLCHAIN" = ndk ]; then CROSS=""; \
    else echo "TOOLCHAIN must be ndk or gcc, not '$TOOLCHAIN'" >&2; exit 1; fi \
 && apt-get install -y -q --no-install-recommends ca-certificates git cmake make gcc g++ python3 file unzip xz-utils bzip2 \
      libstb-dev nlohmann-json3-dev $CROSS \
 && ( [ -s /usr/local/share/ca-certificates/toolkit-extra.crt ] || rm /usr/local/share/ca-certificates/toolkit-extra.crt ) \
 && update-ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Android NDK (android-* targets), sha256 checked.
ARG NDK_VERSION=
ARG NDK_SHA256=
COPY ndk/ /tmp/ndk/
RUN if [ "$TOOLCHAIN" = ndk ]; then \
      echo "${NDK_SHA256}  /tmp/ndk/ndk.zip" | sha256sum -c - \
      && unzip -q /tmp/ndk/ndk.zip -d /opt && mv "/opt/android-ndk-${NDK_VERSION}" /opt/ndk; \
    fi; rm -rf /tmp/ndk

# Paddle Lite: the pinned commit of its tag, built as lite/tools/build_{linux,android}.sh would
# (their download and workspace steps done by hand), or a release archive.
ARG LITE_KIND=source
ARG LITE_REPOSITORY=
ARG LITE_TAG=
ARG LITE_COMMIT=
ARG LITE_CMAKE_OPTIONS=
ARG LITE_ARCHIVE_SHA256=
ARG LITE_LIB_PATH=
ARG ANDROID_API=21
COPY lite-src/ /src/lite/
COPY lite-archive/ /tmp/lite-archive/
RUN set -e; mkdir -p /opt/lite; \
    if [ "$LITE_KIND" = archive ]; then \
      echo "${LITE_ARCHIVE_SHA256}  /tmp/lite-archive/lite.tgz" | sha256sum -c -; \
      mkdir -p /tmp/lite && tar -xzf /tmp/lite-archive/lite.tgz -C /tmp/lite; \
      test -f "/tmp/lite/${LITE_LIB_PATH}" || { echo "the archive has no ${LITE_LIB_PATH}" >&2; exit 1; }; \
      cp -a "$(dirname "$(dirname "/tmp/lite/${LITE_LIB_PATH}")")/." /opt/lite/; rm -rf /tmp/lite; \
      echo "release archive (sha256 ${LITE_ARCHIVE_SHA256})" > /opt/lite/ORIGIN; \
    else \
      if [ ! -d /src/lite/.git ]; then \
        echo "cloning ${LITE_REPOSITORY} at ${LITE_TAG}"; \
        git clone -q --depth 1 --branch "$LITE_TAG" "$LITE_REPOSITORY" /src/lite-clone && rm -rf /src/lite && mv /src/lite-clone /src/lite; \
      fi; \
      actual="$(git -C /src/lite rev-parse HEAD)"; \
      if [ "$actual" != "$LITE_COMMIT" ]; then \
        echo "Paddle Lite source: expected commit $LITE_COMMIT (tag $LITE_TAG, as pinned), but the source is at $actual: refusing to build" >&2; exit 1; fi; \
      described="$(git -C /src/lite describe --tags --exact-match 2>/dev/null || true)"; \
      if [ "$described" != "$LITE_TAG" ]; then \
        echo "Paddle Lite source: commit $actual carries no tag $LITE_TAG (git describe: '$described'); the runtime's version string would not match the .nb files" >&2; exit 1; fi; \
      mkdir -p /src/lite/build/lite/gen_code /src/lite/build/lite/tools/debug; \
      touch /src/lite/build/lite/gen_code/__generated_code__.cc; \
      cp /src/lite/lite/tools/debug/analysis_tool.py /src/lite/build/lite/tools/debug/; \
      cd /src/lite/build; \
      if [ "$TOOLCHAIN" = ndk ]; then EXTRA="-DANDROID_NDK=/opt/ndk -DANDROID_NATIVE_API_LEVEL=${ANDROID_API}"; else EXTRA=""; fi; \
      cmake .. $LITE_CMAKE_OPTIONS $EXTRA -DPYTHON_EXECUTABLE=/usr/bin/python3 > /tmp/lite-cmake.log 2>&1 || { tail -40 /tmp/lite-cmake.log >&2; exit 1; }; \
      grep -E "tag: |commit: " /tmp/lite-cmake.log || true; \
      make -j"$(nproc)" publish_inference > /tmp/lite-make.log 2>&1 || { grep -E "error|Error" /tmp/lite-make.log | head -20 >&2; tail -30 /tmp/lite-make.log >&2; exit 1; }; \
      cp -a /src/lite/build/inference_lite_lib.*/cxx/. /opt/lite/; \
      echo "source ${LITE_REPOSITORY} ${LITE_TAG} ${actual}" > /opt/lite/ORIGIN; \
      rm -rf /src/lite/build; \
    fi; \
    rm -rf /tmp/lite-archive; \
    test -f /opt/lite/include/paddle_api.h && test -f /opt/lite/lib/libpaddle_light_api_shared.so; \
    ls -la /opt/lite/lib

# OpenCV core + imgproc, static, from its pinned source (no codecs, no GUI, no third-party
# downloads; carotene off so that the generic code, the one x86 runs, computes the results).
ARG TARGET_ABI=
ARG OPENCV_SHA256=
ARG OPENCV_SUBDIR=
COPY opencv/ /tmp/opencv/
RUN set -e; echo "${OPENCV_SHA256}  /tmp/opencv/src.archive" | sha256sum -c -; \
    mkdir -p /src/opencv && tar -xf /tmp/opencv/src.archive -C /src/opencv && rm -rf /tmp/opencv; \
    if [ "$TOOLCHAIN" = ndk ]; then \
      TC="-DCMAKE_TOOLCHAIN_FILE=/opt/ndk/build/cmake/android.toolchain.cmake -DANDROID_ABI=${TARGET_ABI} -DANDROID_PLATFORM=android-${ANDROID_API} -DANDROID_STL=c++_static"; \
    else \
      case "$GCC_TRIPLE" in aarch64*) PROC=aarch64 ;; *) PROC=arm ;; esac; \
      TC="-DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=$PROC -DCMAKE_C_COMPILER=${GCC_TRIPLE}-gcc -DCMAKE_CXX_COMPILER=${GCC_TRIPLE}-g++"; \
    fi; \
    echo "$TC" > /opt/toolchain.cmake-args; \
    cmake -S "/src/opencv/${OPENCV_SUBDIR}" -B /src/opencv-build $TC -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/opt/opencv \
      -DBUILD_LIST=core,imgproc -DBUILD_SHARED_LIBS=OFF -DBUILD_ZLIB=ON -DWITH_CAROTENE=OFF -DWITH_IPP=OFF -DWITH_ITT=OFF \
      -DWITH_OPENCL=OFF -DWITH_OPENMP=OFF -DWITH_TBB=OFF -DWITH_EIGEN=OFF -DWITH_LAPACK=OFF -DWITH_ADE=OFF -DWITH_PROTOBUF=OFF \
      -DWITH_CUDA=OFF -DWITH_VA=OFF -DWITH_GTK=OFF -DWITH_QT=OFF -DWITH_JPEG=OFF -DWITH_PNG=OFF -DWITH_TIFF=OFF \
      -DWITH_WEBP=OFF -DWITH_OPENJPEG=OFF -DWITH_JASPER=OFF -DWITH_OPENEXR=OFF -DWITH_FFMPEG=OFF -DWITH_V4L=OFF -DWITH_QUIRC=OFF -DCV_TRACE=OFF -DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF \
      -DBUILD_EXAMPLES=OFF -DBUILD_DOCS=OFF -DBUILD_opencv_apps=OFF -DBUILD_JAVA=OFF -DBUILD_opencv_python2=OFF \
      -DBUILD_opencv_python3=OFF -DBUILD_ANDROID_PROJECTS=OFF -DBUILD_ANDROID_EXAMPLES=OFF -DOPENCV_GENERATE_PKGCONFIG=OFF \
      > /tmp/opencv-cmake.log 2>&1 || { tail -40 /tmp/opencv-cmake.log >&2; exit 1; }; \
    make -C /src/opencv-build -j"$(nproc)" install > /tmp/opencv-make.log 2>&1 || { tail -30 /tmp/opencv-make.log >&2; exit 1; }; \
    rm -rf /src/opencv /src/opencv-build; \
    find /opt/opencv -name "*.a" | sort

# Clipper (the polygon offset PaddleOCR's unclip uses, via pyclipper): one C++ file, built with
# the runner.
ARG CLIPPER_SHA256=
ARG CLIPPER_SUBDIR=
COPY clipper/ /tmp/clipper/
RUN set -e; echo "${CLIPPER_SHA256}  /tmp/clipper/src.archive" | sha256sum -c -; \
    mkdir -p /tmp/clipper/x && tar -xf /tmp/clipper/src.archive -C /tmp/clipper/x; \
    mkdir -p /src/clipper && cp "/tmp/clipper/x/${CLIPPER_SUBDIR}/clipper.cpp" "/tmp/clipper/x/${CLIPPER_SUBDIR}/clipper.hpp" /src/clipper/; \
    rm -rf /tmp/clipper

# ppocr_runner, against all of the above.
ARG BUILD_INFO=
COPY runtime/ /src/runner/
RUN set -e; mkdir -p /src/runner-build /opt/runtime/bin /opt/runtime/lib; cd /src/runner-build; \
    cmake /src/runner $(cat /opt/toolchain.cmake-args) -DCMAKE_BUILD_TYPE=Release -DLITE_DIR=/opt/lite \
      -DOpenCV_DIR="$(dirname "$(find /opt/opencv -name OpenCVConfig.cmake -path "*abi-${TARGET_ABI}/*" | grep . || find /opt/opencv -name OpenCVConfig.cmake | head -1)")" \
      -DCLIPPER_DIR=/src/clipper \
      -DSTB_DIR=/usr/include/stb -DJSON_DIR=/usr/include > /tmp/runner-cmake.log 2>&1 || { tail -30 /tmp/runner-cmake.log >&2; exit 1; }; \
    make -j"$(nproc)"; \
    cp ppocr_runner /opt/runtime/bin/; cp /opt/lite/lib/libpaddle_light_api_shared.so /opt/runtime/lib/; \
    if [ "$TOOLCHAIN" = gcc ]; then \
      for lib in $(${GCC_TRIPLE}-readelf -d /opt/runtime/lib/libpaddle_light_api_shared.so | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do \
        case "$lib" in libgomp.so*|libstdc++.so*|libgcc_s.so*) cp -L "/usr/${GCC_TRIPLE}/lib/$lib" /opt/runtime/lib/ ;; esac; \
      done; \
      ${GCC_TRIPLE}-strip /opt/runtime/bin/ppocr_runner; \
      CXXV="$(${GCC_TRIPLE}-g++ --version | head -1)"; \
      NEEDS="$(${GCC_TRIPLE}-objdump -T /opt/runtime/bin/ppocr_runner /opt/runtime/lib/*.so* | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"; \
    else \
      CXXV="$(/opt/ndk/toolchains/llvm/prebuilt/linux-x86_64/bin/clang++ --version | head -1) (NDK ${NDK_VERSION})"; \
      NEEDS="Android API ${ANDROID_API}"; \
    fi; \
    file /opt/runtime/bin/ppocr_runner | grep -Eq 'ARM|aarch64' || { echo "ppocr_runner is not an ARM binary: $(file /opt/runtime/bin/ppocr_runner)" >&2; exit 1; }; \
    BUILD_INFO="$BUILD_INFO" CXXV="$CXXV" OCV="$(sed -n 's/set(OpenCV_VERSION \(.*\))/\1/p' $(find /opt/opencv -name OpenCVConfig-version.cmake) | head -1)" \
    LIBS="$(ls /opt/runtime/lib | tr '\n' ' ')" LITE_ORIGIN="$(cat /opt/lite/ORIGIN)" NEEDS="$NEEDS" python3 -c 'import json, os; \
info = json.loads(os.environ["BUILD_INFO"]); \
info["compilers"] = {"runner_and_lite": os.environ["CXXV"], "cmake": os.popen("cmake --version").readline().strip()}; \
info["opencv"]["version"] = os.environ["OCV"]; info["lite"]["built"] = os.environ["LITE_ORIGIN"]; \
info["files"] = {"bin": ["ppocr_runner"], "lib": os.environ["LIBS"].split()}; info["device_needs"] = os.environ["NEEDS"]; \
json.dump(info, open("/opt/runtime/BUILD-INFO.json", "w"), indent=2, sort_keys=True)'; \
    cat /opt/runtime/BUILD-INFO.json

FROM ${BASE_IMAGE}
ARG USER_UID=1000
COPY --from=build /opt/runtime /opt/runtime
RUN useradd --create-home --uid ${USER_UID} toolkit
USER toolkit
CMD ["cat", "/opt/runtime/BUILD-INFO.json"]
