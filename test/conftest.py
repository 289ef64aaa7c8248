import os

# Keep every test on this machine and offline: DDS discovery on localhost only, no hub downloads.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", "73")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Derived model directories (minilm-int8's int8 linears) are cached in the build tree, not the user's home.
os.environ.setdefault("BITRL_MODEL_CACHE", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        "build", "model_cache"))

import torch  # noqa: E402

torch.set_num_threads(1)
