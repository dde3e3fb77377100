"""Shipped configs, installed as package data `vlmr.configs`; `vlmr configs` lists them by name."""
