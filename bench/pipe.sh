#!/usr/bin/env bash
# pipe.sh — bash's side of the wiring benchmark: prints "<bytes> <seconds>".
size=${1:-1G}
start=$EPOCHREALTIME
head -c "$size" /dev/zero | cat | cat > /dev/null
end=$EPOCHREALTIME
echo "$(numfmt --from=iec "$size") $(echo "$end - $start" | awk "{printf \"%.6f\", \$1 - \$3}")"
