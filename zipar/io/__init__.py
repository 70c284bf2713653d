"""Files in and out: checkpoints and Hugging Face style folders read safely and lazily, configs
compared with weights before building, and outputs written whole or not at all."""
