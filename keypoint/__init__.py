"""keypoint — heatmap keypoint detectors, box detectors and their verification."""
# --- keypoint data, codecs, metrics, models (AdaAnchor helper) ---
from .codecs import (  # noqa: F401
    AnchorCodec,
    Codec,
    HeatmapCodec,
    HeatmapOffsetCodec,
    OffsetCodec,
    RegressionCodec,
    codec_from_dict,
    encode_batch,
)
from .data import (  # noqa: F401
    CATEGORIES,
    KeypointCropDataset,
    KeypointData,
    KeypointImageDataset,
    KeypointLayout,
    SynthConfig,
    generate_dataset,
    generate_sample,
    load_coco,
    save_coco,
)
from .instability import (  # noqa: F401  (KLPNet helper)
    Grouping,
    fit_similarity,
    fit_templates,
    group_nodes_lis,
    group_nodes_naive,
)
from .klpnet_train import (  # noqa: F401  (KLPNet helper)
    evaluate_klpnet,
    load_klpnet_checkpoint,
    load_klpnet_config,
    predict_dataset,
    train_klpnet,
)
from .links import (  # noqa: F401  (KLPNet helper)
    ConditionalGraphAutoEncoder,
    average_precision,
    link_loss,
    roc_auc,
)
from .metrics import (  # noqa: F401
    keypoint_recall,
    nme,
    oks,
    oks_ap,
    oks_matrix,
    pck,
    pck_per_keypoint,
    visibility_split,
)
from .models import (  # noqa: F401
    Backbone,
    KeypointModel,
    build_model,
    model_types,
    register_model,
)
from .models.klpnet import KLPNet  # noqa: F401  (KLPNet helper)
from .verify import (  # noqa: F401  (certified keypoints, issue 10)
    KeypointSpec,
    KeypointVerification,
    verify_keypoints,
    verify_keypoints_decoupled,
)
