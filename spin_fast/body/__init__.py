"""The SMPL body: loading the model files and evaluating the model."""
from spin_fast.body.model import Body, BodyModel, BodyOutput
