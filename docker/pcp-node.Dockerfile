# PCP node agent for the llmd-bench DaemonSet: pmcd with the Linux and nvidia PMDAs, in the foreground.
# Debian's pcp 6.0.3 is the version the pipeline is tested with (its archives, its pmrep). Build:
#   docker build -f docker/pcp-node.Dockerfile -t <registry>/llmd-bench-pcp-node:6.0.3 .
FROM debian:12.8-slim
# pcp's post-install calls systemctl; a no-op stand-in lets it configure without systemd.
RUN printf '#!/bin/sh\nexit 0\n' > /usr/local/bin/systemctl && chmod +x /usr/local/bin/systemctl \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pcp=6.0.3-1.1 \
 && rm -rf /var/lib/apt/lists/* /usr/local/bin/systemctl
# The nvidia PMDA in pmcd.conf (before [access]), its names in the PMNS, its help text: the same script
# tests/test_pcp_node.py runs against a real pmcd.
COPY docker/pcp-node-setup.sh /usr/local/sbin/pcp-node-setup
RUN /usr/local/sbin/pcp-node-setup
# The nvidia PMDA opens the unversioned libnvidia-ml.so; the NVIDIA runtime injects only .so.1.
# pmcd logs to stderr with `-l -` (with `-l /dev/stderr` libpcp unlinks the path and writes a file instead).
RUN printf '%s\n' '#!/bin/sh' \
    'lib=$(ldconfig -p | awk "/libnvidia-ml.so.1 /{print \$NF; exit}")' \
    '[ -n "$lib" ] && ln -sf "$lib" /usr/lib/libnvidia-ml.so' \
    'mkdir -p /run/pcp && chown pcp:pcp /run/pcp' \
    'exec /usr/lib/pcp/bin/pmcd -f -A -l -' > /usr/local/bin/pcp-node && chmod +x /usr/local/bin/pcp-node
EXPOSE 44321
ENTRYPOINT ["/usr/local/bin/pcp-node"]
