# Step image: `llmd-bench <step>` with GuideLLM and the clients the steps need. Built from the repo root:
#   docker build -f docker/steps.Dockerfile -t <registry>/llmd-bench-steps:0.1.0 .
FROM python:3.11.7-slim-bookworm
# pcp: the sweep pod runs pmlogger against each GPU node's pmcd (the DaemonSet), collect_pcp runs pmrep.
# Its post-install calls systemctl; a no-op stand-in lets it configure without systemd.
RUN printf '#!/bin/sh\nexit 0\n' > /usr/local/bin/systemctl && chmod +x /usr/local/bin/systemctl \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends xz-utils ca-certificates pcp=6.0.3-1.1 \
 && rm -rf /var/lib/apt/lists/* /usr/local/bin/systemctl
WORKDIR /opt/llmd-bench
COPY requirements.txt requirements-steps.txt constraints.txt pyproject.toml ./
# torch from the CPU index: GuideLLM needs it, the load generator needs no GPU (and no 3 GB CUDA build).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt -r requirements-steps.txt -c constraints.txt
COPY plugins/ plugins/
COPY include/ include/
RUN pip install --no-cache-dir --no-deps . && pip check && llmd-bench --help > /dev/null
# HOME and the Hugging Face cache (the sweep downloads the model's tokenizer) live under /work, the pods'
# scratch emptyDir; /work exists in the image too, owned by the step user, so it also runs without the mount.
RUN mkdir -p /work && chown 65532:65532 /work
ENV LLMD_BENCH_HOME=/opt/llmd-bench LLMD_BENCH_RUNTIME=kubernetes PYTHONUNBUFFERED=1 \
    HOME=/work HF_HOME=/work/.cache/huggingface
USER 65532:65532
ENTRYPOINT ["llmd-bench"]
