"""The HMR network: ResNet backbone (torchvision names) and the IEF head (mmhuman3d names)."""
from spin_fast.model.hmr import HMR, HMRHead, HMROutput
from spin_fast.model.resnet import ResNet

__all__ = ["HMR", "HMRHead", "HMROutput", "ResNet"]
