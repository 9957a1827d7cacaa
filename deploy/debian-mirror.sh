# Sourced by the deploy scripts; defines debian_mirror.
# The Debian mirror this machine's apt already uses, read from its sources
# (deb822 *.sources first, then one-line *.list / sources.list): in a closed
# network that mirror is the only one reachable, so never hard-code a host.
debian_mirror() {
    if [[ -n ${THAW_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "${THAW_DEBIAN_MIRROR%/}"
        return
    fi
    local codename f uri
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || codename=bookworm
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # Paragraph mode: one deb822 stanza per record. Pick the first enabled
        # "deb" stanza whose Suites name the release itself (not -security).
        uri=$(awk -v c="$codename" '
            BEGIN { RS = ""; FS = "\n" }
            {
                deb = 0; suite = 0; u = ""; enabled = 1
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    key = tolower(line); sub(/:.*/, "", key)
                    val = line; sub(/^[^:]*:[ \t]*/, "", val)
                    n = split(val, w, /[ \t]+/)
                    if (key == "types")   for (j = 1; j <= n; j++) if (w[j] == "deb") deb = 1
                    if (key == "suites")  for (j = 1; j <= n; j++) if (w[j] == c) suite = 1
                    if (key == "uris" && n > 0) u = w[1]
                    if (key == "enabled" && tolower(w[1]) == "no") enabled = 0
                }
                if (deb && suite && enabled && u != "") { print u; exit }
            }' "$f")
        if [[ -n $uri ]]; then printf '%s\n' "${uri%/}"; return; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        uri=$(awk -v c="$codename" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == c) { print $i; exit }
            }' "$f")
        if [[ -n $uri ]]; then printf '%s\n' "${uri%/}"; return; fi
    done
    return 1
}
