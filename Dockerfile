# One image holding every service's venv; docker-compose.yml picks the process per service.
FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends \
        make redis-tools ffmpeg libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
# no Redis password in the image: docker-compose.yml hands it in from the host's .secrets/
RUN make setup && rm -rf .secrets
