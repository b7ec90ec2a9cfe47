# Top-level Makefile over CMake. Targets: all (release build), debug, asan (ASan+UBSan), tsan
# (ThreadSanitizer), test, clean. The sanitizer builds leave the CUDA backend out.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all debug asan tsan test clean
all:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
debug:
	$(MAKE) BUILD=build-debug CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)" all
asan:
	$(MAKE) BUILD=build-asan CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON -DKILN_CUDA=OFF" all
tsan:
	$(MAKE) BUILD=build-tsan CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE_THREAD=ON -DKILN_CUDA=OFF" all
test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
clean:
	rm -rf build build-debug build-asan build-tsan
