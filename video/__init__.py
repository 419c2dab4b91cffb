"""The video pipeline: from files on disk to the clips a step reads.

decode.py reads frames from a video file or a frame folder and samples them (TSN segments); transforms.py is the
training augmentation and the test views; layouts.py finds each dataset's videos and class names in its official
layout or in list files, with the published class orders; kinetics600.py the published Kinetics-600 zero-shot
test sets; synthetic.py the offline demo's clips; batches.py the seeded global batches that make --resume exact,
and the loader's workers; sequential.py decodes a whole video in order and re-encodes it (prepare.py's copy,
verify.py's check); verify.py is `python data.py verify`. data.py, at the root, builds a protocol's dataset from
these parts.

Imports only the method files (clip.py for the pixel statistics) and itself, never harness/.
"""
