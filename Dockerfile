# syntax=docker/dockerfile:1
# One image for the three hrtrack services (intake, tracker, notifier) and the CLI.
# The service is chosen by the command, e.g.
#   uvicorn services.intake.main:app --host 0.0.0.0 --port 8000
#   hrtrack db upgrade
# No secret is baked in: every setting comes from HRTRACK_* environment variables.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the project and its dependencies into a virtualenv ----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps the context to what `pip install .` needs (no .env, .git, tests).
COPY . .
RUN pip install . \
 && test -x /opt/venv/bin/hrtrack \
 && cd / && python -c "import services, shared, hrtrack"

# ---- runtime: the virtualenv only, run as an unprivileged user ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hrtrack" \
      org.opencontainers.image.description="Follow-up of human-rights recommendations: intake, tracker, notifier"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1

RUN groupadd --system --gid 10001 hrtrack \
 && useradd --system --uid 10001 --gid hrtrack --home-dir /home/hrtrack --create-home \
      --shell /usr/sbin/nologin hrtrack

COPY --from=build /opt/venv /opt/venv

WORKDIR /home/hrtrack
USER 10001:10001

EXPOSE 8000

# docker-compose.yml sets the command of each service; alone, the image shows the CLI help.
CMD ["hrtrack", "--help"]
