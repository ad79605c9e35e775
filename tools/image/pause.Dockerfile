# The pod sandbox ("pause") image of the node test tier, as Kubernetes' own
# build/pause/Dockerfile makes it: one static binary, nothing else. The binary is compiled
# from k8s.io/kubernetes's build/pause/linux/pause.c by tools/k8s/build-node.sh;
# tools/image/build.sh builds this with that binary as the whole build context.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
