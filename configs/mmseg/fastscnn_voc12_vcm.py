# FastSCNN on PASCAL VOC 2012, trained and evaluated on VCM-decoded images.
#
# The only VCM-specific lines are `custom_imports` and the two `VCMCompress` steps; the rest is
# mmseg's own FastSCNN + VOC config, adapted for a single CPU/GPU (BN instead of SyncBN,
# 21 classes).
#
#   from mmengine import Config
#   from mmengine.runner import Runner
#   cfg = Config.fromfile("configs/mmseg/fastscnn_voc12_vcm.py")  # honours custom_imports
#   cfg.work_dir = "work_dirs/fastscnn_voc12_vcm"
#   Runner.from_cfg(cfg).train()            # or mmseg's tools/train.py with this file
#
# Data: a VOC2012 layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/*.txt).
# Point VCM_VOC_ROOT at it; the default is the small public val set beside the repo, which has
# only ImageSets/Segmentation/val.txt: as shipped the example trains and validates on those 13
# images (a smoke run). With a full VOC set, VCM_VOC_TRAIN_SPLIT=ImageSets/Segmentation/train.txt.
_base_ = [
    "mmseg::_base_/models/fast_scnn.py",
    "mmseg::_base_/datasets/pascal_voc12.py",
    "mmseg::_base_/default_runtime.py",
    "mmseg::_base_/schedules/schedule_20k.py",
]

# Registers VCMCompress (and, on mmcv-lite, the mmcv.ops import shim mmseg needs).
custom_imports = dict(imports=["vcm_plugin.integrations.mmseg"], allow_failed_imports=False)

data_root = "{{$VCM_VOC_ROOT:../shared/data/voc2012-seg-val}}"
train_split = "{{$VCM_VOC_TRAIN_SPLIT:ImageSets/Segmentation/val.txt}}"
val_split = "ImageSets/Segmentation/val.txt"
crop_size = (512, 512)
num_classes = 21
norm_cfg = dict(type="BN", requires_grad=True, momentum=0.01)  # SyncBN needs a process group

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=[
        dict(
            type="FCNHead",
            in_channels=128,
            channels=32,
            num_convs=1,
            num_classes=num_classes,
            in_index=-2,
            norm_cfg=norm_cfg,
            concat_input=False,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=0.4),
        ),
        dict(
            type="FCNHead",
            in_channels=64,
            channels=32,
            num_convs=1,
            num_classes=num_classes,
            in_index=-3,
            norm_cfg=norm_cfg,
            concat_input=False,
            align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=0.4),
        ),
    ],
)

# Training: every picture as a receiver decodes it, at an operating point drawn per sample
# between the semantic layer alone and four layers. The stored picture is compressed (right
# after loading), then augmented as usual. cache=True: later epochs decode without re-encoding.
train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="VCMCompress", layers=(1, 4), cache=True),
    dict(type="RandomResize", scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type="RandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="RandomFlip", prob=0.5),
    dict(type="PhotoMetricDistortion"),
    dict(type="PackSegInputs"),
]
# Evaluation: the semantic layer only (what an edge camera sends to analytics).
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="VCMCompress", layers=1),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]

# batch_size >= 2: FastSCNN's BatchNorm needs more than one value per channel when training
# (the InfiniteSampler of the iteration-based schedule never yields a short last batch).
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    dataset=dict(data_root=data_root, ann_file=train_split, pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    dataset=dict(data_root=data_root, ann_file=val_split, pipeline=test_pipeline),
)
test_dataloader = val_dataloader
