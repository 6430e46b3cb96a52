"""Train: a new network with live progress, stop, divergence guard; download and upload checkpoints."""

import streamlit as st

from xwp.app import frame, keys, session
from xwp.app import safe as app_safe
from xwp.app import train_page as glue
from xwp.config import LIMITS
from xwp.data.datasets import DATASETS
from xwp.errors import XWPError
from xwp.models import CNN_MAX_KERNEL, INITS
from xwp.train import ARCHS, OPTIMIZERS, TrainConfig

MB = 1024 * 1024


def folder_widgets(name: str, label: str, placeholder: str, help: str) -> str | None:
    """A pick among the operator's folders that hold ``name`` and a box to type another one inside them.

    Returns what was typed (checked against the allowed folders when training starts) or the
    picked folder; visitors never reach a folder the operator did not allow.
    """
    folders = app_safe.dataset_folders(name)
    picked = None
    if folders:
        picked = st.selectbox(
            label,
            folders,
            key=f"train_pick_{name}",
            help="Folders of this server that hold the files (set by the operator with --data-dir or XWP_DATA_DIRS).",
        )
    typed = st.text_input(
        "…or a path inside the allowed data folders" if folders else label,
        value="",
        key=f"train_dir_{name}" if name != "tmnist" else "train_tmnist_path",
        persist_state="session",
        placeholder=placeholder,
        help=help + " Only folders the operator allowed can be read (--data-dir, XWP_DATA_DIRS).",
    )
    return typed.strip() or picked


def data_source(name: str) -> tuple[str | None, object | None]:
    """Widgets for where the dataset's files are; returns (data_dir, the uploaded TMNIST file or None)."""
    if not DATASETS[name].offline:  # MNIST, Fashion-MNIST: torchvision's files
        folder = "MNIST" if name == "mnist" else "FashionMNIST"
        path = folder_widgets(
            name,
            "Data folder",
            f"folder that holds {folder}/raw/*-ubyte.gz",
            f"A folder in torchvision's layout: DIR/{folder}/raw/ with the four .gz files. It is only read. "
            "Leave empty to download the files into the cache (needs internet).",
        )
        return path, None
    if name == "tmnist":
        path = folder_widgets(
            name,
            "Path of TMNIST_Data.csv",
            "TMNIST_Data.csv or its folder, inside the allowed data folders",
            "The Typeface-MNIST CSV from Kaggle (saurabhvyawahare/tmnist-typeface-mnist), or the folder that holds it.",
        )
        upload = st.file_uploader(
            "…or upload it",
            type=["csv", "gz"],
            key="train_tmnist_upload",
            max_upload_size=LIMITS.max_upload_bytes // MB,
            help=f"TMNIST_Data.csv (or .csv.gz), at most {LIMITS.max_upload_bytes // MB} MB. It is checked and "
            "read in memory, never stored on the server.",
        )
        return (None, upload) if upload is not None else (path, None)
    return None, None


ARCH_LABELS = {"mlp": "MLP", "cnn": "CNN"}


def network_widgets(arch: str, col) -> dict:
    """The network's sizes for ``arch`` (hidden sizes in ``col``; a CNN's channels and kernel on a row below).

    Returns the :class:`~xwp.train.TrainConfig` arguments ``arch``, ``hidden`` and, for a CNN,
    ``channels`` and ``kernel`` (checked when training starts).
    """
    if arch == "mlp":
        hidden = col.text_input(
            "Hidden layer sizes",
            value="400,100",
            key="train_hidden",
            persist_state="session",
            help=f"Comma separated, e.g. 400,100 (the paper) or 256; empty for none. At most "
            f"{LIMITS.max_hidden_layers} layers of {LIMITS.max_hidden_width} units.",
        )
        return {"arch": "mlp", "hidden": hidden}
    head = col.text_input(
        "Dense head sizes",
        value="128",
        key="train_head",
        persist_state="session",
        help="Hidden layers of the dense head after the convolutions, comma separated; empty for none.",
    )
    k1, k2, _ = st.columns(3)
    channels = k1.text_input(
        "Conv channels",
        value="32,64",
        key="train_channels",
        persist_state="session",
        help="Output channels of each conv-ReLU-maxpool block, comma separated (1 to 4 blocks), e.g. 32,64.",
    )
    kernel = k2.number_input(
        "Kernel size",
        1,
        CNN_MAX_KERNEL,
        3,
        key="train_kernel",
        persist_state="session",
        help="Square kernel of every convolution, padded by kernel // 2 so the size is kept before pooling.",
    )
    return {"arch": "cnn", "hidden": head, "channels": channels, "kernel": int(kernel)}


def main() -> None:
    frame.routed("pages/train.py")
    st.title("Train a network")
    st.caption(
        "A fully connected ReLU network (MLP) or a small convolutional one (CNN); its initial weights are kept "
        "with it, which is what XWP needs. The new model becomes the active one in the sidebar."
    )
    left, right = st.columns([1, 1.4], gap="large")
    with left:
        name = st.selectbox(
            "Dataset",
            list(DATASETS),
            format_func=lambda k: DATASETS[k].label,
            key="train_dataset",
            persist_state="session",
            help="Typeface and scikit-learn digits are built in and need no download.",
        )
        st.caption(DATASETS[name].description)
        data_dir, upload = data_source(name)
        arch = st.segmented_control(
            "Network",
            list(ARCHS),
            format_func=ARCH_LABELS.get,
            default="mlp",
            required=True,
            key="train_arch",
            persist_state="session",
            help="MLP: dense ReLU layers (the paper's 784-400-100-10). CNN: conv-ReLU-maxpool blocks, then a "
            "dense head; XWP perturbs its first convolution's kernels (docs/cnn.md).",
        )
    if st.session_state.pop(keys.CLEAR_NAME_KEY, False):
        st.session_state["train_name"] = ""  # a new run gets a new name, not the last run's
    with right, st.form("train_form", border=True):
        c1, c2, c3 = st.columns(3)
        model_name = c1.text_input(
            "Model name",
            value="",
            placeholder="automatic",
            key="train_name",
            help="How the model is listed in the sidebar (default: dataset and architecture).",
        )
        network = network_widgets(arch, c2)
        epochs = c3.number_input(
            "Epochs",
            1,
            LIMITS.max_epochs,
            10,
            key="train_epochs",
            persist_state="session",
            help=f"Passes over the training set (at most {LIMITS.max_epochs}).",
        )
        lr = c1.number_input(
            "Learning rate",
            1e-6,
            10.0,
            1e-3,
            format="%g",
            step=1e-4,
            key="train_lr",
            persist_state="session",
            help="Annealed to 0 with a cosine schedule. Very large values make training diverge.",
        )
        batch = c2.number_input(
            "Batch size",
            1,
            65536,
            128,
            key="train_batch",
            persist_state="session",
            help="Images per optimisation step.",
        )
        optimizer = c3.selectbox(
            "Optimizer",
            OPTIMIZERS,
            key="train_optimizer",
            persist_state="session",
            help="Adam (the default), SGD with momentum 0.9, or AdamW.",
        )
        init = c1.selectbox(
            "Initialisation",
            INITS,
            key="train_init",
            persist_state="session",
            help="torch: PyTorch's default for nn.Linear; kaiming: He-normal weights, zero biases. "
            "XWP measures change from this state.",
        )
        seed = c2.number_input(
            "Seed",
            0,
            2**31 - 1,
            0,
            key="train_seed",
            persist_state="session",
            help="Seed of the initial weights and of the shuffling.",
        )
        submitted = st.form_submit_button("Train", type="primary", icon=":material/play_arrow:")

    if submitted:
        if name == "tmnist" and not data_dir and upload is None:
            st.error("TMNIST needs the path of TMNIST_Data.csv or an uploaded copy.")
        else:
            with frame.user_errors():
                config = TrainConfig(
                    dataset=name,
                    data_dir=data_dir,
                    **network,
                    epochs=int(epochs),
                    lr=float(lr),
                    batch_size=int(batch),
                    optimizer=optimizer,
                    init=init,
                    seed=int(seed),
                )
                glue.train_model(
                    config,
                    name=model_name,
                    upload_name=upload.name if upload is not None else None,
                    upload=upload.getvalue() if upload is not None else None,
                )
    glue.training_progress()
    glue.show_training_result()

    st.divider()
    st.subheader("Checkpoints")
    down, up = st.columns(2, gap="large")
    with down:
        entry = session.active_model()
        if entry is not None:
            try:
                data, file_name = glue.checkpoint_file(entry)
                st.download_button(
                    f"Download “{app_safe.md(entry.name)}”",
                    data,
                    file_name=file_name,
                    on_click="ignore",
                    mime="application/octet-stream",
                    icon=":material/download:",
                    help="A .safetensors file with the trained and the initial weights and the "
                    "training settings; nothing in it can run code.",
                )
            except XWPError as e:
                st.error(str(e))
    with up:
        upload = st.file_uploader(
            "Upload a checkpoint",
            key="checkpoint_upload",
            max_upload_size=LIMITS.max_upload_bytes // MB,
            help="A .safetensors file written by xwp (this app or `python -m xwp train`). "
            "Pickled PyTorch files are refused because loading them can run code.",
        )
        glue.load_uploaded_checkpoint(upload)


main()
