"""The TSM network, its checkpoints and label files; ships inside the TorchServe model archive.

Imports only torch, torchvision, numpy, the standard library and itself.
"""
