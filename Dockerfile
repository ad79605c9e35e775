# syntax=docker/dockerfile:1
# The slotfleet image: one image for the operator (`slotfleet operator`), the workers
# (`slotfleet worker`; build your task image FROM this one and add your code, as
# examples/Dockerfile does) and the dashboard (`slotfleet dashboard`).
# tools/image/build.sh builds this file unchanged without a Docker engine (buildah, over a
# locally made python:3.11 base) for the node test tier.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder: the wheel only
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# only what the wheel is built from (see .dockerignore), so unrelated edits keep the cache
COPY pyproject.toml README.md LICENSE ./
COPY slotfleet ./slotfleet
RUN pip wheel --no-deps --wheel-dir /dist .

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 slotfleet \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/slotfleet \
      --shell /usr/sbin/nologin slotfleet
# the wheel with every extra (PostgreSQL, the operator, the dashboard: `slotfleet
# dashboard` and the chart's optional dashboard Deployment, about 6 MiB of starlette,
# uvicorn, jinja2 and rich that the worker never imports) and their dependencies from the
# index, nothing else from the build context
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --no-cache-dir "$(ls /dist/*.whl)[all]" \
 && rm -rf /root/.cache
USER 10001:10001
# writable for the embedded sqlite store of a local `slotfleet worker` (not used in a cluster)
WORKDIR /home/slotfleet
ENTRYPOINT ["slotfleet"]
CMD ["--help"]

LABEL org.opencontainers.image.title="slotfleet" \
      org.opencontainers.image.description="A Python job queue whose worker fleet is run by a Kubernetes operator" \
      org.opencontainers.image.source="https://github.com/slotfleet/slotfleet" \
      org.opencontainers.image.licenses="Apache-2.0"
