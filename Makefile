# dptlearn — every set-up step lives here. Two commands matter:
#   make lab    install (once) and open the course in JupyterLab
#   make test   install (once) and run every test: pytest + nbval
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dptlearn-installed
PORT   ?= 8888

.PHONY: install lab my-work test test-gpu test-portable test-portable-numerics test-fast notebooks exercises bench export train-bench grade-bench browser-deps sandbox-deps clean

# Reinstall only when the pins, the package metadata or the lab settings change.
$(STAMP): requirements.txt pyproject.toml jupyter/overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23" "setuptools>=64" wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name dptlearn --display-name "Python (dptlearn)"
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $@

install: $(STAMP)

# One launcher for learners and tests (tests/test_lab.py, tests/test_browser.py run it too):
# 127.0.0.1 + Jupyter's token, opens notebooks/00_overview.ipynb, course kernel, no news pop-ups.
# A changed jupyter/overrides.json re-runs the install step (it is a prerequisite of the stamp).
lab: install
	bash scripts/lab.sh --jupyter $(BIN)/jupyter --root "$(CURDIR)" --port $(PORT)

# Debian's Chromium for the real-browser test (skipped with a message where it cannot be installed).
browser-deps:
	@bash scripts/install_browser.sh || echo "warning: Chromium could not be installed; the browser test will be skipped"

# Debian's bubblewrap for the grader's sandbox (the grader falls back without it, and says so).
sandbox-deps:
	@bash scripts/install_bwrap.sh || echo "warning: bubblewrap could not be installed; the grader will run without a sandbox and the hostile-submission tests will be skipped"

# JUnit XML of both runs goes to test-reports/ (CI uploads it; .github/workflows/test.yml).
REPORTS := test-reports

test: install browser-deps sandbox-deps
	mkdir -p $(REPORTS)
	$(BIN)/python -m pytest tests --junitxml=$(REPORTS)/pytest.xml
	$(BIN)/python -m pytest -p no:python --nbval --nbval-current-env \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 300 notebooks solutions \
	    --junitxml=$(REPORTS)/nbval.xml
	$(MAKE) --no-print-directory test-portable-numerics

# The optional GPU path, on a machine with an NVIDIA GPU and a CUDA build of torch (docs/teaching.md, "Running on a GPU"):
# the CUDA-marked tests (the device-parametrised tests on cuda, the solutions graded with --device
# cuda at full marks), then nbval of notebooks/ and solutions/ on cuda against the stored CPU outputs.
# NVIDIA_TF32_OVERRIDE=0 keeps cuBLAS/cuDNN in full float32 (no TF32), so outputs differ from the
# CPU's only by round-off, which tests/nbval_sanitize_gpu.cfg (appended to the CPU rules) absorbs.
# Without CUDA it stops at once, before any test, and says so.
test-gpu: install
	@$(BIN)/python -c 'import sys, torch; torch.cuda.is_available() or sys.exit("make test-gpu: no CUDA device: torch " + torch.__version__ + " says torch.cuda.is_available() is False. This target needs an NVIDIA GPU and a CUDA build of torch; on the CPU run make test.")'
	mkdir -p $(REPORTS)
	$(BIN)/python -m pytest tests -m cuda --junitxml=$(REPORTS)/gpu-pytest.xml
	cat tests/nbval_sanitize.cfg tests/nbval_sanitize_gpu.cfg > $(REPORTS)/nbval_sanitize_cuda.cfg
	DPTLEARN_DEVICE=cuda NVIDIA_TF32_OVERRIDE=0 $(BIN)/python -m pytest -p no:python --nbval \
	    --nbval-current-env --nbval-sanitize-with $(REPORTS)/nbval_sanitize_cuda.cfg \
	    --nbval-cell-timeout 300 notebooks solutions --junitxml=$(REPORTS)/gpu-nbval.xml

# The numerical tests and nbval with torch's CPU kernels forced down to other instruction sets (a learner's
# laptop or a CI runner may have any CPU): ATen's scalar `default` and its `avx2` kernels, oneDNN capped at
# AVX2. Passing means no test and no stored output depends on this machine's kernels. `make test` runs the
# numerical part (~1 min); `make test-portable` adds nbval under avx2 (~5 min; the workflow's portable job).
NUMERICS := tests/test_reference_data.py tests/test_dust3r_numerics.py tests/test_modules.py tests/test_keys.py \
            tests/test_hf_parity.py tests/test_family.py tests/test_precision.py tests/test_export.py \
            tests/test_released_checkpoint.py tests/test_device_determinism.py tests/test_checks.py \
            tests/test_losses.py tests/test_data.py tests/test_backbone_training.py tests/test_fast.py
PORTABLE_ISA ?= avx2
test-portable-numerics: install
	mkdir -p $(REPORTS)
	@case "$$(uname -m)" in x86_64|amd64) ;; *) echo "test-portable-numerics: ATen's default/avx2 kernels exist on x86-64 only; skipped on $$(uname -m)"; exit 0;; esac; \
	for isa in default avx2; do \
	    echo "== numerical tests with ATEN_CPU_CAPABILITY=$$isa ONEDNN_MAX_CPU_ISA=AVX2"; \
	    ATEN_CPU_CAPABILITY=$$isa ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q -p no:cacheprovider $(NUMERICS) \
	        --junitxml=$(REPORTS)/portable-$$isa.xml || exit 1; \
	done

test-portable: test-portable-numerics
	ATEN_CPU_CAPABILITY=$(PORTABLE_ISA) ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m pytest -q -p no:python --nbval \
	    --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout 300 notebooks solutions \
	    --junitxml=$(REPORTS)/portable-nbval.xml

test-fast: install
	$(BIN)/python -m pytest tests -m "not browser and not slow"

notebooks: install
	$(BIN)/python scripts/execute_notebooks.py notebooks solutions

# Regenerate exercises/ from solutions/; refuses to overwrite a notebook edited since it was generated.
exercises: install
	$(BIN)/dptlearn-make-exercises

# The learner's own folder (make lab does this too): copies what is missing, never overwrites.
my-work: install
	$(BIN)/python -m dptlearn.course.workspace --root "$(CURDIR)"

bench: install
	$(BIN)/python scripts/bench_head.py
	$(BIN)/python scripts/bench_onnx.py

# DUSt3R's head as ONNX (13 token inputs, dynamic batch; outputs pts3d, conf) at 512x384.
export: install
	$(BIN)/python -m dptlearn.export --out artifacts/dust3r_head.onnx --size 384 512

train-bench: install
	$(BIN)/python scripts/train_bench.py

# DUSt3R's linear head against a DPT head on the shipped encoder's frozen tokens (docs/training.md); the last
# line is {"dpt_absrel", "linear_absrel", "dpt_edge_absrel", "linear_edge_absrel", "seconds"}.
.PHONY: probe-bench
probe-bench: install
	$(BIN)/python scripts/probe_bench.py

# The shipped checkpoint dptlearn/train/weights/tiny_dust3r.pt (+ .sha256): seeded, 2 threads (see docs/training.md).
# Stage 1 (16-pixel patches from random weights, ~45 min) writes artifacts/pretrain/stage1.pt once; stage 2
# (8-pixel patches fine-tuned from it, ~60 min) writes the shipped file. PRETRAIN_ARGS passes options to stage 2,
# e.g. make pretrain PRETRAIN_ARGS="--resume artifacts/pretrain/stage2/state.pt"; delete stage1.pt to redo stage 1.
.PHONY: pretrain eval-pretrained
PRETRAIN_ARGS ?=
STAGE1 := artifacts/pretrain/stage1.pt
$(STAGE1): | install
	$(BIN)/python scripts/pretrain.py --stage 1

pretrain: install $(STAGE1)
	$(BIN)/python scripts/pretrain.py --stage 2 $(PRETRAIN_ARGS)

# Held-out scenes (seed 20000); the last line is {"absrel", "delta1", "absrel_conf50"}.
eval-pretrained: install
	$(BIN)/python scripts/eval_pretrained.py

grade-bench: install
	$(BIN)/python scripts/bench_grade.py

# The course as a website (book/build.py, Sphinx + myst-nb): every lecture, exercise handout and docs page,
# from the stored outputs (nothing is executed), into build/book/html/index.html. GitHub Pages: book.yml.
# BOOK_ARGS="--repo OWNER/NAME" adds each notebook's Binder launch button (in GitHub Actions: the repository).
.PHONY: book
BOOK_ARGS ?=
book: install
	$(BIN)/python book/build.py --out build/book $(BOOK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache artifacts $(REPORTS)
