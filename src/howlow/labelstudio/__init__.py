"""A person as the Oracle, in Label Studio (README, "Annotate your own data in Label Studio").

config    the labelling config of a data set's classes, and reading one back
images    a task's image: only files under the allowed storage roots, never a URL
clicks    keypoints (Label Studio's percent coordinates) as pixel clicks [y, x, class]
session   one task's per-image network, trained on the clicks so far by the Oracle's engine
server    the ML backend (FastAPI): /health, /setup, /predict, /webhook
export    a Label Studio JSON export as the Oracle's records (data/oracle), for the pipeline
"""
