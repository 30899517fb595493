#!/bin/sh
# One-shot: make $EMBED_MODEL available in the Ollama at $OLLAMA_HOST.
#  1. already there: nothing to do;
#  2. a GGUF mounted at /models/llama-embed-nemotron-8b.gguf: ollama create from /deploy/Modelfile;
#  3. otherwise: ollama pull $EMBED_MODEL_SOURCE (a GGUF conversion on Hugging Face) and
#     create $EMBED_MODEL from it with the same parameters.
# An Ollama too old for the "llama-embed" architecture fails here or at the
# worker's warm-up, naming the model; see the README.
set -eu
: "${EMBED_MODEL:?}"
: "${OLLAMA_HOST:?}"
if ollama show "$EMBED_MODEL" >/dev/null 2>&1; then
  echo "model $EMBED_MODEL is present"
  exit 0
fi
if [ -f /models/llama-embed-nemotron-8b.gguf ]; then
  echo "creating $EMBED_MODEL from /models/llama-embed-nemotron-8b.gguf"
  exec ollama create "$EMBED_MODEL" -f /deploy/Modelfile
fi
: "${EMBED_MODEL_SOURCE:?no GGUF in /models and no EMBED_MODEL_SOURCE to pull}"
echo "pulling $EMBED_MODEL_SOURCE"
ollama pull "$EMBED_MODEL_SOURCE"
printf 'FROM %s\nPARAMETER num_ctx 8192\n' "$EMBED_MODEL_SOURCE" > /tmp/Modelfile
exec ollama create "$EMBED_MODEL" -f /tmp/Modelfile
