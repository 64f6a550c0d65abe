"""The HMR network: ResNet backbone (torchvision names), the IEF head (mmhuman3d names), and loading
its weights from mmhuman3d, SPIN and spin_fast checkpoints (`checkpoint_import`)."""
from spin_fast.model.hmr import HMR, HMRHead, HMROutput
from spin_fast.model.resnet import ResNet

__all__ = ["HMR", "HMRHead", "HMROutput", "ResNet"]
