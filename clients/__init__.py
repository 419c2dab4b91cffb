"""Backbone clients: the small contract of adapters.py (its header) given to other libraries' CLIP.

openclip_backbone.py wraps open_clip's CLIP, hf_backbone.py Hugging Face's CLIPModel. Each imports only torch and
its library, so adapters.py and one client can be copied alone into another project (docs/adapters.md).
"""
