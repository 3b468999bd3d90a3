"""The interfaces every part codes against: plain dataclasses and Protocols, no Ray, no torch.

`engine` (VLM engines: chat requests, sampling, completions), `generator` (image generators),
`judge` (judges), `reward` (critic rewards). rollout/, rewards/, testbed/ and the pipeline import
these, never each other's actors.
"""
