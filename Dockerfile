# One image for every process of docs/deploy.md's production layout: the
# one-shot migrate, the Daphne processes and the Celery workers
# (compose.yaml starts them). Laid out as the systemd units in docs/deploy/
# expect: the code and its virtualenv in /srv/assistant, the collected
# static files in /srv/assistant/var/static, processes run as `assistant`.
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates gettext python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

# The app only reads its files: they stay root's, so a process of the app
# cannot change its own code.
RUN useradd --system --user-group --home-dir /srv/assistant --no-create-home \
        --shell /usr/sbin/nologin assistant

WORKDIR /srv/assistant

# Requirements before the code, so that a change of code alone reuses the
# installed virtualenv from the build cache.
COPY requirements.txt .
RUN python3 -m venv .venv \
    && .venv/bin/pip install --no-cache-dir -r requirements.txt

COPY . .
RUN .venv/bin/python manage.py compilemessages -l zh_Hans --ignore .venv \
    && .venv/bin/python manage.py collectstatic --noinput -v 0

ENV PATH=/srv/assistant/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER assistant
# No default command: compose.yaml gives each service its own.
