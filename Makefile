# specdyn build. `make` builds ./train; `make test` builds and runs the tests.
# Both first install missing Debian packages (apt-get, as root or via sudo).

CC      ?= gcc
CFLAGS  ?= -O3 -g -march=native
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wdouble-promotion
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -fopenmp $(WARN) $(CFLAGS) \
              -Icore -Imodels -Itasks -Itrace -Icli -Itests -I/usr/include/openblas
LDLIBS  := -lopenblas -ldnnl -llapacke -linih -lcjson -lplplot -lz -lm
BUILD   := build

# Debian packages the build and the tests need. python3-torch is only needed
# to regenerate golden values (tests/golden/make_golden.py), not to test.
PACKAGES := gcc make libopenblas-openmp-dev liblapacke-dev libinih-dev libcjson-dev \
            libplplot-dev plplot-driver-cairo zlib1g-dev libstb-dev dataset-fashion-mnist \
            libdnnl-dev

# make bench also runs the same workloads in PyTorch.
BENCH_PACKAGES := python3-torch

LIB_SRC := $(wildcard core/*.c models/*.c tasks/*.c trace/*.c) cli/checkpoint.c
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)

.PHONY: all deps test asan bench clean

all: deps train report sweep

# Install the missing packages of $(1) with apt-get (as root or via sudo).
define install_missing
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
endef

deps: $(BUILD)/.deps
$(BUILD)/.deps: Makefile
	@mkdir -p $(BUILD)
	$(call install_missing,$(PACKAGES))
	@touch $@

$(BUILD)/%.o: %.c | $(BUILD)/.deps
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

train: $(BUILD)/cli/train.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

report: $(BUILD)/cli/report.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

sweep: $(BUILD)/cli/sweep.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/run_tests: $(TEST_OBJ) $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

test: deps train report sweep $(BUILD)/run_tests
	OMP_NUM_THREADS=2 $(BUILD)/run_tests

# specdyn against PyTorch on this CPU (bench/run.py; see bench/README.md).
# Needs python3-torch, which the tests do not.
$(BUILD)/sgemm_peak: bench/sgemm_peak.c | $(BUILD)/.deps
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

bench: deps train $(BUILD)/sgemm_peak
	$(call install_missing,$(BENCH_PACKAGES))
	/usr/bin/python3 bench/run.py --sgemm-peak $(BUILD)/sgemm_peak $(BENCH_ARGS)

# AddressSanitizer and UBSan build of the same tests, in a separate tree.
asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	        build-asan/run_tests train-asan
	OMP_NUM_THREADS=2 build-asan/run_tests

train-asan: $(BUILD)/cli/train.o $(LIB_OBJ)
	$(CC) $(ALL_CFLAGS) $^ -o $@ $(LDLIBS)

clean:
	rm -rf build build-asan train train-asan report sweep

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/cli/train.d $(BUILD)/cli/report.d $(BUILD)/cli/sweep.d
