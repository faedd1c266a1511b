"""Record keys shared by the ServerApp and the ClientApp, defined once.

Flower messages carry string-keyed records; a typo on one side silently drops a value on the
other, so every key that crosses the wire is a constant here.
"""

# RecordDict entries
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# ConfigRecord entries (server -> client)
SERVER_ROUND = "server-round"
QUERY = "query"  # what a query message asks a node to compute (a task's setup: its name)
RELEASE = "release"  # CONFIG entry of a setup's broadcast: the release's id

# ArrayRecord entries (client -> server) beside the model's arrays
STATISTICS = "statistics"  # an algorithm's reply: its wire vector (fedcore.statistics)
WIRE = "wire"  # ConfigRecord in an algorithm's reply: its spec's bound, for the secagg mod
COMPRESSED = "compressed"  # ArrayRecord of a compressed reply or model (fedcore.compressed)
RESIDUAL = "compression-residual"  # ArrayRecord in Context.state: error feedback's residual

# MetricRecord entries (client -> server)
NUM_EXAMPLES = "num-examples"  # the aggregation weight, Flower's default `weighted_by_key`
LOSS = "loss"
ACCURACY = "accuracy"
TRAIN_LOSS = "train-loss"
TRAIN_SECONDS = "train-seconds"

# Node config (set by Flower's simulation engine and by SuperNodes' --node-config)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
DATA_PATH = "data-path"  # a deployed node's own dataset file (fedcore.datasets.node)
STATE_DIR = "state-dir"  # where a deployed node keeps its privacy ledger across restarts

# Node state
LOCAL_MODEL = "local-model"  # ArrayRecord in Context.state: the part of the model kept local
SETUP_KEPT = "setup-kept"  # ArrayRecord in Context.state: what the node kept of the release
SETUP_ANSWERED = "setup-answered"  # ConfigRecord in Context.state: the node sent its vector
SETUP_ID = "setup-id"  # ConfigRecord in Context.state: which release it kept (its id)

# Privacy
CLIP_NORM = "clip-norm"  # CONFIG entry under adaptive client-side clipping: the round's norm
NORM_BIT = "norm-bit"  # MetricRecord entry of the reply: 1 if the client clipped, else 0
EPSILON = "epsilon"  # MetricRecord: the client's epsilon so far (at the run's delta)
# The words of a client's error reply when it declines a round at its privacy budget.
BUDGET_DECLINE = "privacy budget exhausted"
DP_EVENT = "dp-event"  # ConfigRecord in a reply: the DP mechanism this round applied
DP_EVENT_JSON = "json"  # its one entry: the privacy.ledger.DpEvent as a JSON line
LEDGER = "privacy-ledger"  # ConfigRecord in a node's Context.state: its events so far

# Secure aggregation (server <-> client, in the CONFIG record and the SECAGG record)
SECAGG = "secagg"  # ConfigRecord: a stage's payload, both ways
SECAGG_STAGE = "secagg-stage"  # CONFIG entry: "train" (a query: "input"), "share-keys",
# "masked-input", "unmask"
SECAGG_BITS = "secagg-bits"  # CONFIG entry of the train stage: the modulus 2^k of the round
SECAGG_STATE = "secagg-state"  # ConfigRecord in Context.state: the client's protocol state
SECAGG_MASKING = "secagg-masking"  # ConfigRecord in Context.state: the mod will mask what the
# query handler computes this round (the handler refuses to compute without it)
SECAGG_INPUT = "secagg-input"  # ArrayRecord in Context.state: the encoded update
MASKED = "masked"  # Array in the masked-input reply
