"""SPIN facts as tables (docs/spin.md and the upstream files it cites). Every joint index in the project
comes from here."""

# --- SMPL -----------------------------------------------------------------------------------------
NUM_VERTICES = 6890
NUM_FACES = 13776
NUM_JOINTS = 24  # SMPL kinematic joints
NUM_BETAS = 10
NUM_POSE_FEATURES = 207  # 23 joints x 9 (R - I)
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SMPL_JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
]
# The 21 smplx landmark vertices appended after the 24 joints (smpl_45 = 24 + 21), in smplx order.
LANDMARK_VERTICES = {
    "nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583,
    "LBigToe": 3216, "LSmallToe": 3226, "LHeel": 3387,
    "RBigToe": 6617, "RSmallToe": 6624, "RHeel": 6787,
    "lthumb": 2746, "lindex": 2319, "lmiddle": 2445, "lring": 2556, "lpinky": 2673,
    "rthumb": 6191, "rindex": 5782, "rmiddle": 5905, "rring": 6016, "rpinky": 6133,
}
LANDMARK_VERTEX_IDS = list(LANDMARK_VERTICES.values())
# J_regressor_extra rows (smpl_54 = smpl_45 + these 9).
EXTRA_JOINT_NAMES = ["right_hip", "left_hip", "neck", "headtop", "pelvis", "thorax", "spine", "jaw", "head"]
NUM_EXTRA_JOINTS = 9
NUM_H36M_JOINTS = 17

# smpl_49 (SPIN's joint set) taken from smpl_54.
SMPL_54_TO_49 = [
    24, 12, 17, 19, 21, 16, 18, 20, 0, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34,
    8, 5, 45, 46, 4, 7, 21, 19, 17, 16, 18, 20, 47, 48, 49, 50, 51, 52, 53, 24, 26, 25, 28, 27,
]
SPIN_49_NAMES = [
    # 25 OpenPose joints
    "OP Nose", "OP Neck", "OP RShoulder", "OP RElbow", "OP RWrist", "OP LShoulder", "OP LElbow",
    "OP LWrist", "OP MidHip", "OP RHip", "OP RKnee", "OP RAnkle", "OP LHip", "OP LKnee", "OP LAnkle",
    "OP REye", "OP LEye", "OP REar", "OP LEar", "OP LBigToe", "OP LSmallToe", "OP LHeel",
    "OP RBigToe", "OP RSmallToe", "OP RHeel",
    # 24 ground-truth joints
    "Right Ankle", "Right Knee", "Right Hip", "Left Hip", "Left Knee", "Left Ankle", "Right Wrist",
    "Right Elbow", "Right Shoulder", "Left Shoulder", "Left Elbow", "Left Wrist", "Neck (LSP)",
    "Top of Head (LSP)", "Pelvis (MPII)", "Thorax (MPII)", "Spine (H36M)", "Jaw (H36M)", "Head (H36M)",
    "Nose", "Left Eye", "Right Eye", "Left Ear", "Right Ear",
]
NUM_SPIN_JOINTS = 49
NUM_OPENPOSE_JOINTS = 25  # the first 25 of the 49; the 24 ground-truth ones follow
SPIN_GT_JOINTS = tuple(range(NUM_OPENPOSE_JOINTS, NUM_SPIN_JOINTS))
GT_RIGHT_HIP, GT_LEFT_HIP = 27, 28  # "Right Hip", "Left Hip" of the 49 (25 + 2, 25 + 3)
GT_PELVIS_MPII = 39  # "Pelvis (MPII)" of the 49
SPIN_49_FLIP = [0, 1, 5, 6, 7, 2, 3, 4, 8, 12, 13, 14, 9, 10, 11, 16, 15, 18, 17, 22, 23, 24, 19, 20, 21] + [
    25 + i for i in [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22]
]
# SMPL joint flip permutation for the 24x3 axis-angle pose; negate y and z after permuting.
SMPL_POSE_FLIP_JOINTS = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22]
SMPL_POSE_FLIP = [3 * j + k for j in SMPL_POSE_FLIP_JOINTS for k in range(3)]  # over the flat 72

# H36M-17 (J_regressor_h36m order: pelvis, L hip, L knee, L ankle, R hip, R knee, R ankle, spine, neck,
# head, head top, L shoulder, L elbow, L wrist, R shoulder, R elbow, R wrist) -> the evaluation joints:
# 14 LSP-order joints (3DPW, Human3.6M), then pelvis, spine, head (MPI-INF-3DHP's 17). SPIN constants.py.
H36M_TO_J17 = [6, 5, 4, 1, 2, 3, 16, 15, 14, 11, 12, 13, 8, 10, 0, 7, 9]
H36M_TO_J14 = H36M_TO_J17[:14]
H36M_PELVIS = 0
# SPIN's eval.py takes the same joints from the 24 ground-truth joints of its own test files (`S`), whose
# preprocessing (datasets/preprocess/h36m.py, mpi_inf_3dhp.py: `global_idx`) put H36M joint h at
# H36M_IN_SPIN_J24[h]: head at 17 ('Jaw (H36M)'), head top at 18 ('Head (H36M)').
J24_TO_J17 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 14, 16, 17]
J24_TO_J14 = J24_TO_J17[:14]
H36M_IN_SPIN_J24 = [14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6]
# mmhuman3d's converters (data_converters/h36m.py, mpi_inf_3dhp.py) store the same joints by name in
# the HumanData convention: head as 'head_extra' and head top as 'headtop', which read back among SPIN's
# 24 ground-truth joints (the last 24 of the 49) at 18 ('Head (H36M)') and 13 ('Top of Head (LSP)').
H36M_IN_HUMANDATA_J24 = [14, 3, 4, 5, 2, 1, 0, 16, 12, 18, 13, 9, 10, 11, 8, 7, 6]
# So the evaluation joints of a HumanData file's 24 ground-truth joints: SPIN's J24_TO_J17 with each
# joint found where mmhuman3d stores it (the same physical joints SPIN compares).
HUMANDATA_J24_TO_J17 = [H36M_IN_HUMANDATA_J24[h] for h in H36M_TO_J17]
HUMANDATA_J24_TO_J14 = HUMANDATA_J24_TO_J17[:14]
GT_J24_PELVIS = 14  # 'Pelvis (MPII)': the root the converters centre the 3D joints on
# H36M-17 joint h -> its HumanData column (mmhuman3d's 'h36m' convention names in 'human_data' order); the
# MPI-INF-3DHP test set's 17 joints are the same 17 names (its 'mpi_inf_3dhp_test' convention).
H36M_HUMANDATA_COLUMNS = [148, 145, 4, 7, 144, 5, 8, 150, 146, 152, 147, 16, 18, 20, 17, 19, 21]
# 3D PCK / AUC (mmhuman3d core/evaluation/eval_utils.py keypoint_3d_pck, keypoint_3d_auc)
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = [5.0 * i for i in range(31)]  # np.linspace(0, 150, 31)

# --- HumanData (mmhuman3d) ------------------------------------------------------------------------
HUMAN_DATA_NUM_KEYPOINTS = 190
HUMAN_DATA_TO_SPIN_49 = [
    153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171,
    172, 173, 174, 175, 176, 177,
    8, 5, 144, 145, 4, 7, 21, 19, 17, 16, 18, 20, 146, 147, 148, 149, 150, 151, 152, 55, 57, 56, 59, 58,
]

# --- Image / camera -------------------------------------------------------------------------------
IMG_RES = 224
MIN_INPUT_RES = 32  # the smallest network input side (model.input_res): the backbone's total stride
FOCAL_LENGTH = 5000.0
IMAGENET_MEAN = [123.675, 116.28, 103.53]  # RGB, 0-255
IMAGENET_STD = [58.395, 57.12, 57.375]

# --- SMPLify (SPIN pixel-space) -------------------------------------------------------------------
SMPLIFY_SIGMA = 100.0
SMPLIFY_POSE_PRIOR_WEIGHT = 4.78
SMPLIFY_ANGLE_PRIOR_WEIGHT = 15.2
SMPLIFY_SHAPE_PRIOR_WEIGHT = 5.0
SMPLIFY_DEPTH_WEIGHT = 100.0
SMPLIFY_LR = 1e-2
# body_pose (69) indices of the angle prior and their signs (SPIN / mmhuman3d variants).
ANGLE_PRIOR_INDICES = [52, 55, 9, 12]
ANGLE_PRIOR_SIGNS = [1.0, -1.0, -1.0, -1.0]
MMH_ANGLE_PRIOR_INDICES = [55, 58, 12, 15]
# Torso joints for stage 1: OpenPose R hip, L hip, R shoulder, L shoulder, else the GT ones.
TORSO_OPENPOSE = [9, 12, 2, 5]
TORSO_GT = [27, 28, 33, 34]
# smpl_49 joints whose confidence is zeroed in stage 2.
STAGE2_IGNORED_JOINTS = [1, 9, 12, 27, 28]
FIT_VALID_THRESHOLD = 100.0  # SPIN's valid fit: mean pixel reprojection loss over 49 joints < 100 (mmhuman3d's
# rule, summed normalised loss < 10, and both recipes' rules: spin_fast.recipes ValidFitRule)
BETA_RESET_THRESHOLD = 3.0

# --- Datasets ---------------------------------------------------------------------------------------
# Each training batch's share of every training set: mmhuman3d's fixed ratios; SPIN fixes h36m and
# mpi_inf_3dhp and splits the rest over the in-the-wild sets by their sizes (`data.datasets.mix_ratios`).
MMHUMAN3D_MIX = {"h36m": 0.35, "mpi_inf_3dhp": 0.15, "lsp": 0.10, "lspet": 0.10, "mpii": 0.10, "coco": 0.20}
SPIN_MIX_FIXED = {"h36m": 0.3, "mpi_inf_3dhp": 0.1}
SPIN_MIX_IN_THE_WILD = ("lsp", "lspet", "mpii", "coco")
SPIN_MIX_IN_THE_WILD_SHARE = 0.6
# Gender: the spellings HumanData files use -> one code, and each code's id in a batch (`gender` (B,)).
GENDER_CODES = {"m": "m", "male": "m", "f": "f", "female": "f", "n": "n", "neutral": "n", "": "n"}
GENDER_IDS = {"m": 0, "f": 1, "n": -1}
