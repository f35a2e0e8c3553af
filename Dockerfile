# Latent Lab, CPU image: serves the app on 0.0.0.0:7860.
#   docker build -t latent-lab .
#   docker run --rm -p 7860:7860 latent-lab
# CUDA: the same file with a CUDA build of torch (the wheels bring their CUDA libraries; the host needs the NVIDIA
# driver and the NVIDIA Container Toolkit):
#   docker build -t latent-lab:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#   docker run --rm --gpus all -p 7860:7860 latent-lab:cuda
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    LATENT_LAB_CACHE=/home/app/.cache/latent_lab

# An unprivileged user: the app needs to write only its cache (downloaded StyleGAN weights) and $TMPDIR.
RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/latent-lab

COPY requirements.txt .
RUN pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION" \
 && pip install -r requirements.txt

COPY --chown=app:app . .
USER app

EXPOSE 7860
# `docker stop` sends SIGTERM: the app deletes every session's files before it exits (README, Privacy).
# Add options after the image name, e.g. `docker run ... latent-lab --auth alice:secret --max-models 2`.
ENTRYPOINT ["python", "app.py", "--host", "0.0.0.0", "--port", "7860"]
