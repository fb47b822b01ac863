"""Speed: ``bench`` (latency, throughput and memory, dense against pruned), ``settings`` (what it
measures), ``flops`` (the FLOP counts that bound them), ``vllm`` (serving and benchmarking through
vLLM in its own environment)."""
