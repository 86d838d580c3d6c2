# One image for the web app and the workers: Python 3.11 + the bpy wheel (Blender 4.5 LTS as a module).
FROM python:3.11-slim-bookworm

# Libraries Blender's module links against (X11/GL stubs even when rendering headless).
RUN apt-get update && apt-get install -y --no-install-recommends \
        libx11-6 libxi6 libxxf86vm1 libxfixes3 libxrender1 libxkbcommon0 libsm6 libice6 \
        libgl1 libegl1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY farm farm
COPY webapp webapp
COPY workers workers
RUN pip install --no-cache-dir '.[blender]'

RUN useradd --create-home farm && mkdir -p /data && chown farm /data
USER farm
ENV FARM_INSTANCE_DIR=/data PYTHONUNBUFFERED=1
EXPOSE 5000
CMD ["farm", "web", "--host", "0.0.0.0", "--port", "5000"]
