# A plain mmseg FastSCNN for PASCAL VOC (21 classes) to use with the harness's mmseg option:
#
#   python -m vcm_eval.rate_accuracy --task segmentation --data ../shared/data/voc2012-seg-val \
#       --mmseg-config configs/eval/fastscnn_voc12.py --mmseg-checkpoint YOUR_CHECKPOINT.pth \
#       --codecs vcm,jpeg,webp,avif,jxl --out runs/seg_mmseg
#
# The harness compresses the images itself, so the test pipeline has no VCMCompress step (one in
# a user's config is removed by the harness). No pretrained VOC FastSCNN ships with mmseg's
# wheel; the tests run this config with random weights (plumbing only).
_base_ = ["mmseg::_base_/models/fast_scnn.py"]

num_classes = 21
norm_cfg = dict(type="BN", requires_grad=True, momentum=0.01)  # SyncBN needs a process group
model = dict(
    data_preprocessor=dict(size=None),
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
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(2048, 512), keep_ratio=True),
    dict(type="PackSegInputs"),
]
