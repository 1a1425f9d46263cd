# twopc's image: every twopc service of the compose stack runs it, each with its own
# command (`serve --config ...`, `bank serve ...`, `events serve ...`, `mockqueue serve ...`).
#   docker build -t twopc .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: the locked dependencies, each checked against its hash, then twopc itself, into
# a virtual environment that the final stage copies whole (no compiler, no pip cache).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/twopc
COPY requirements-image.lock /src/
RUN /opt/twopc/bin/pip install --require-hashes --no-deps -r /src/requirements-image.lock
COPY pyproject.toml README.md /src/
COPY twopc_core /src/twopc_core
COPY compose /src/compose
COPY coordinator /src/coordinator
COPY participant_sdk /src/participant_sdk
COPY adapters /src/adapters
COPY chaos /src/chaos
COPY tools /src/tools
RUN /opt/twopc/bin/pip install --no-deps /src

FROM ${PYTHON_IMAGE}
# A user of its own, never root. Its home is where the services keep their data
# (participant logs): a named volume mounted there starts owned by this user.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/twopc --create-home --shell /usr/sbin/nologin twopc
COPY --from=build /opt/twopc /opt/twopc
ENV PATH=/opt/twopc/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER twopc:twopc
WORKDIR /var/lib/twopc
EXPOSE 7070
# The coordinator's /readyz on its default port; a service on another port or path sets
# TWOPC_HEALTHCHECK_URL (or, in compose, a healthcheck of its own). No curl here: Python.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "compose.healthcheck"]
ENTRYPOINT ["twopc"]
CMD ["--help"]
