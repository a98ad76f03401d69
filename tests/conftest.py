"""Hermetic tests: no third-party plugin autoload, one torch thread."""

import os

os.environ["PRINCIPLELAB_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import torch

torch.set_num_threads(1)
