# Cross-building the engine for aarch64 Linux (the CPU of the Ascend 310 boxes) with Debian's
# g++-aarch64-linux-gnu and the arm64 libjpeg62-turbo-dev (dpkg --add-architecture arm64):
#
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DIBNEDGE_CORE_ONLY=ON -DIBNEDGE_TOOLS=ON
#
# IBNEDGE_AARCH64_SYSROOT (optional): a directory of unpacked arm64 packages (tests/arm64.sh
# builds one with CPython); searched after the multiarch paths of the host's arm64 packages.
# Run the binaries with qemu-aarch64 -E LD_LIBRARY_PATH=... (shared/notes/arm64.md: -L with the
# cross toolchain's loader hangs in pthread_create).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /)
if(IBNEDGE_AARCH64_SYSROOT)
  list(APPEND CMAKE_FIND_ROOT_PATH ${IBNEDGE_AARCH64_SYSROOT})
endif()
# Programs (the host's cmake, python) come from the host; libraries, headers and CMake
# packages only from the target's paths.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
