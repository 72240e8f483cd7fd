-- natchat.lua: a Wireshark dissector for natchat's two protocols (docs/PROTOCOL.md).
--
-- Use it:
--   wireshark -X lua_script:mininet/natchat.lua capture.pcap
--   tshark    -X lua_script:mininet/natchat.lua -r capture.pcap
-- or copy it to ~/.local/lib/wireshark/plugins/ and Wireshark loads it every time.
--
-- What it decodes:
--   NATCHAT       the P2P chat. TCP lines to and from the registration server (port 10080);
--                 UDP datagrams to the server (HELLO, ALIVE, AWAKE, port 10080; NAT_PROBE to
--                 10080 and 10081), from a port the OS picked for it (NAT_OPEN) and between clients
--                 (CHAT, ACK, PROBE, PROBE_ACK, on any port: a datagram is taken when its
--                 first word and its shape are those of a natchat message).
--   NATCHAT-ROOM  the chat room: text lines on TCP port 8888; an `#upload <bytes> <name>`
--                 header and the file's bytes that follow it.
-- Other ports: Edit > Preferences > Protocols > NATCHAT (or NATCHAT-ROOM), or on the command
-- line `-o natchat.tcp_port:4000 -o natchat_room.tcp_port:9000`; Decode As works too
-- (`-d tcp.port==4000,natchat`). TCP hands a connection to the dissector of its lower port:
-- a server port above a client's (ephemeral) port may lose to another dissector of that port.
-- For UDP, `-o udp.try_heuristic_first:TRUE` makes natchat's heuristic win over any
-- dissector that claims a client's port.
--
-- Filter on what a message says: natchat.type == "CHAT", natchat.id == "alice",
-- natchat.text contains "hello", natchat.seq == 3, natchat.addr, natchat.nonce, natchat.tag,
-- natchat.reason; natchat_room.kind == "upload", natchat_room.upload.name. A line that is
-- not a valid message is flagged as malformed (natchat.malformed, natchat_room.malformed),
-- with the reason, exactly as src/wire.rs would refuse it.

local natchat = Proto("natchat", "natchat P2P chat")
local room = Proto("natchat_room", "natchat chat room")

-- The limits of src/wire.rs and the room (docs/PROTOCOL.md).
local MAX_ID, MAX_TEXT, MAX_LINE, MAX_ROOM_LINE = 32, 1000, 2048, 8192

---------------------------------------------------------------------------------------------
-- The P2P messages: the first word, then each word's role, in order (src/wire.rs).
-- A role ending in "?" may be missing at the end of the line; "text", "message" and
-- "datagram" take the rest of the line (a datagram is parsed again: RELAY, RELAYED).
---------------------------------------------------------------------------------------------
local MESSAGES = {
    request = {   -- client -> server, TCP
        REGISTER = { "id", "private", "asleep?" },
        PUNCH    = { "peer" },
        RELAY    = { "to", "datagram" },
        UDP_BLOCKED = {},
        NAT_TEST = { "nonce" },
        NAT      = { "kind" },
        EXIT     = {},
    },
    event = {     -- server -> client, TCP
        WELCOME   = { "nonce" },
        CHALLENGE = { "nonce" },
        READY     = { "public" },
        PEER      = { "id", "public", "private" },
        LIST_END  = {},
        JOIN      = { "id", "public", "private" },
        AWAKE     = { "id", "addr" },
        MOVE      = { "id", "addr" },
        LEAVE     = { "id", "reason" },
        PUNCH     = { "peer", "key" },
        RELAYED   = { "datagram" },
        NAT_TEST  = { "altport" },
        NAT_SEEN  = { "port", "seen" },
        NAT       = { "id", "kind" },
        ERROR     = { "message" },
    },
    announce = {  -- client -> server, UDP
        HELLO = { "id", "nonce" },
        ALIVE = { "id" },
        AWAKE = { "id", "nonce?" },
        NAT_PROBE = { "id", "nonce" },
    },
    answer = {    -- server -> client, UDP, from a port the OS picked for the server (NAT discovery)
        NAT_OPEN = { "nonce" },
    },
    datagram = {  -- client <-> client, UDP, or inside RELAY / RELAYED
        CHAT      = { "from", "session", "seq", "base", "stamp", "tag", "text" },
        ACK       = { "from", "seq", "stamp" },
        PROBE     = { "from", "nonce", "tag" },
        PROBE_ACK = { "from", "nonce", "seen", "tag" },
    },
}

local f = {
    type   = ProtoField.string("natchat.type", "Type"),
    id     = ProtoField.string("natchat.id", "ID"),
    peer   = ProtoField.string("natchat.peer", "Peer"),
    addr   = ProtoField.string("natchat.addr", "Address"),
    asleep = ProtoField.bool("natchat.asleep", "Asleep"),
    relayed = ProtoField.bool("natchat.relayed", "Relayed (its UDP is blocked)"),
    session = ProtoField.string("natchat.session", "Sender's session"),
    seq    = ProtoField.uint64("natchat.seq", "Sequence number"),
    base   = ProtoField.uint64("natchat.base", "Base (lowest number still to come)"),
    nonce  = ProtoField.string("natchat.nonce", "Nonce"),
    stamp  = ProtoField.string("natchat.stamp", "Stamp"),
    key    = ProtoField.string("natchat.key", "Key"),
    tag    = ProtoField.string("natchat.tag", "Tag"),
    text   = ProtoField.string("natchat.text", "Text", base.UNICODE),
    reason = ProtoField.string("natchat.reason", "Reason"),
    nat    = ProtoField.string("natchat.nat", "NAT kind"),
    port   = ProtoField.string("natchat.port", "Server port"),
    line   = ProtoField.string("natchat.line", "Line", base.UNICODE),
}
natchat.fields = f
local malformed = ProtoExpert.new("natchat.malformed", "Malformed natchat message",
    expert.group.MALFORMED, expert.severity.ERROR)
natchat.experts = { malformed }

natchat.prefs.tcp_port = Pref.uint("Server port (TCP and UDP)", 10080,
    "The registration server's port")

---------------------------------------------------------------------------------------------
-- Checking one word
---------------------------------------------------------------------------------------------
local function is_id(w)
    return #w >= 1 and #w <= MAX_ID and w:find("^[%w_.-]+$") ~= nil
end

local function is_hex(n)
    return function(w) return #w == n and w:find("^%x+$") ~= nil end
end

local function is_port(p)
    return p:find("^%d+$") ~= nil and #p <= 5 and tonumber(p) <= 65535
end

-- ip:port or [v6]:port, as Rust's SocketAddr parses it (an IPv4 octet has no leading zero).
local function is_addr(w)
    local a, b, c, d, port = w:match("^(%d+)%.(%d+)%.(%d+)%.(%d+):(%d+)$")
    if a then
        for _, octet in ipairs({ a, b, c, d }) do
            if #octet > 3 or tonumber(octet) > 255 or (#octet > 1 and octet:sub(1, 1) == "0") then
                return false
            end
        end
        return is_port(port)
    end
    local v6, port6 = w:match("^%[([%x:.%%%w]+)%]:(%d+)$")
    return v6 ~= nil and v6:find(":") ~= nil and is_port(port6)
end

-- A u64 in decimal (Rust accepts a leading '+').
local function is_u64(w)
    local digits = w:match("^%+?(%d+)$")
    if not digits then return false end
    digits = digits:gsub("^0+(%d)", "%1")
    return #digits < 20 or (#digits == 20 and digits <= "18446744073709551615")
end

local function u64(w)
    local n = UInt64(0)
    for digit in w:gmatch("%d") do n = n * 10 + tonumber(digit) end
    return n
end

local REASONS = { deregistered = true, disconnected = true, disappeared = true }
local NATS = { none = true, open = true, cone = true, symmetric = true,
               ["open-symmetric"] = true, unknown = true }

-- A port number as src/wire.rs takes it: digits only, 1 to 65535.
local function is_port_number(w)
    return w:find("^%d+$") ~= nil and #w <= 5 and tonumber(w) >= 1 and tonumber(w) <= 65535
end

-- Each role: its field, its label, how it is checked, how it shows in the Info column.
local function short(w) return w:sub(1, 8) .. "…" end
local ROLES = {
    id      = { f.id, "ID", is_id },
    from    = { f.id, "From", is_id },
    peer    = { f.peer, "Peer", is_id },
    to      = { f.peer, "To", is_id },
    private = { f.addr, "Private address", is_addr },
    addr    = { f.addr, "Public address", is_addr },
    public  = { f.addr, "Public address",
                function(w) return w == "asleep" or w == "relayed" or is_addr(w) end },
    seen    = { f.addr, "Seen address", is_addr, function(w) return "seen " .. w end },
    nonce   = { f.nonce, "Nonce", is_hex(32), short },
    stamp   = { f.stamp, "Stamp", is_hex(32), function() end },
    key     = { f.key, "Key", is_hex(32), function() end },
    tag     = { f.tag, "Tag", is_hex(16), function() end },
    session = { f.session, "Session", is_hex(16), function() end },
    seq     = { f.seq, "Sequence number", is_u64, function(w) return "seq " .. w end },
    base    = { f.base, "Base", is_u64, function() end },
    reason  = { f.reason, "Reason", function(w) return REASONS[w] ~= nil end },
    asleep  = { f.asleep, "Asleep", function(w) return w == "asleep" end },
    kind    = { f.nat, "NAT kind", function(w) return NATS[w] ~= nil end },
    port    = { f.port, "Port", is_port_number },
    altport = { f.port, "Port", function(w) return w == "none" or is_port_number(w) end },
}

-- The first 40 characters of a text, quoted (never cutting a UTF-8 character in two).
local function quote(s)
    local chars, out = 0, {}
    for ch in s:gmatch("[%z\1-\127\192-\255][\128-\191]*") do
        chars = chars + 1
        if chars > 40 then out[#out + 1] = "…"; break end
        out[#out + 1] = ch
    end
    return '"' .. table.concat(out) .. '"'
end

local function shown(w)
    if #w > 20 then w = w:sub(1, 20) .. "..." end
    return "'" .. w:gsub("%c", "?") .. "'"
end

---------------------------------------------------------------------------------------------
-- Parsing one line: the same words, in the same order, as src/wire.rs's `Words`
---------------------------------------------------------------------------------------------

-- Parses `s` as a message of `channel`. Returns the message ({ name, words = { {role, pos,
-- len, value, nested} } }, positions 0-based in `s`) or nil and why not.
local function parse(channel, s)
    local pos = 1                                  -- the rest of the line is s:sub(pos)
    local function word()
        local space = s:find(" ", pos, true)
        local start, w = pos, s:sub(pos, (space or #s + 1) - 1)
        pos = space and space + 1 or #s + 1
        return w, start
    end
    local name = word()
    if name == "" then return nil, "empty line" end
    local roles = MESSAGES[channel][name]
    if not roles then
        local known = {}
        for k in pairs(MESSAGES[channel]) do known[#known + 1] = k end
        table.sort(known)
        return nil, "unknown message " .. shown(name) .. " (expected " .. table.concat(known, ", ") .. ")"
    end
    local msg = { name = name, words = {} }
    local function add(role, start, w, nested)
        msg.words[#msg.words + 1] = { role = role, pos = start - 1, len = #w, value = w, nested = nested }
    end
    for _, role in ipairs(roles) do
        local optional = role:sub(-1) == "?"
        role = role:gsub("%?$", "")
        local rest = s:sub(pos)
        if role == "text" or role == "message" then
            if #rest > MAX_TEXT then return nil, "text longer than " .. MAX_TEXT .. " bytes" end
            add(role, pos, rest)
            pos = #s + 1
        elseif role == "datagram" then
            local inner, why = parse("datagram", rest)
            if not inner then return nil, why end
            add(role, pos, rest, inner)
            pos = #s + 1
        elseif not (optional and rest == "") then
            local w, start = word()
            local spec = ROLES[role]
            if w == "" then return nil, "missing " .. spec[2]:lower() end
            if not spec[3](w) then return nil, "bad " .. spec[2]:lower() .. " " .. shown(w) end
            add(role, start, w)
        end
    end
    if pos <= #s then return nil, "unexpected " .. shown(s:sub(pos)) end
    return msg
end

-- The Info column's words for a message: "CHAT alice→? seq 3 "hello bob"".
local function summary(msg, to)
    local out = { msg.name }
    for _, w in ipairs(msg.words) do
        local spec, text = ROLES[w.role], nil
        if w.role == "from" then
            text = w.value .. "→" .. (to or "?")
        elseif w.role == "to" then
            to = w.value
        elseif w.role == "text" or w.role == "message" then
            text = quote(w.value)
        elseif w.role == "datagram" then
            text = summary(w.nested, to)
        elseif spec[4] then
            text = spec[4](w.value)
        else
            text = w.value
        end
        out[#out + 1] = text
    end
    return table.concat(out, " ")
end

-- Adds a message's fields under `tree`; `range` is the line's bytes.
local function add_fields(tree, range, msg)
    tree:add(f.type, range:range(0, #msg.name), msg.name)
    for _, w in ipairs(msg.words) do
        local wr = w.len > 0 and range:range(w.pos, w.len) or range:range(math.max(w.pos - 1, 0), 0)
        if w.role == "text" or w.role == "message" then
            tree:add(f.text, wr, w.len > 0 and wr:string(ENC_UTF_8) or "")
        elseif w.role == "datagram" then
            local sub = tree:add(natchat, wr, "Datagram: " .. summary(w.nested))
            add_fields(sub, wr, w.nested)
        elseif w.role == "public" and w.value == "asleep" or w.role == "asleep" then
            tree:add(f.asleep, wr, true)
        elseif w.role == "public" and w.value == "relayed" then
            tree:add(f.relayed, wr, true)
        elseif w.role == "seq" or w.role == "base" then
            tree:add(ROLES[w.role][1], wr, u64(w.value))
        else
            local spec = ROLES[w.role]
            tree:add(spec[1], wr, w.value, spec[2] .. ": " .. w.value)
        end
    end
end

---------------------------------------------------------------------------------------------
-- Lines over TCP, reassembled across segments; the Info column
---------------------------------------------------------------------------------------------

-- Sets or extends the Info column: the first message of a packet replaces TCP's text.
local function info(pinfo, state, text)
    if state.first then
        pinfo.cols.info:set(text)
        state.first = false
    else
        pinfo.cols.info:append(" | " .. text)
    end
end

-- Calls `each(offset, length, eol)` for every whole line in `tvb` (eol: the bytes of its
-- "\n" or "\r\n"); asks TCP for more bytes for a line cut short. `each` may return how
-- many bytes after the line belong to it (an upload), or nil. Returns the bytes used.
local function for_each_line(tvb, pinfo, max_line, each)
    local offset, total = 0, tvb:len()
    while offset < total do
        local chunk = tvb:raw(offset, math.min(total - offset, max_line + 2))
        local nl = chunk:find("\n", 1, true)
        if not nl then
            if #chunk <= max_line + 1 and pinfo.can_desegment > 0 then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                return total
            end
            nl = #chunk + 1                            -- too long, or no more to come: as is
        end
        local eol = 0
        if nl <= #chunk then eol = (nl > 1 and chunk:sub(nl - 1, nl - 1) == "\r") and 2 or 1 end
        local length = nl - 1 - math.max(eol - 1, 0)
        local after = each(offset, length, eol) or 0
        local available = total - (offset + length + eol)
        if after > available then
            if pinfo.can_desegment > 0 then
                pinfo.desegment_offset = offset
                pinfo.desegment_len = after - available
                return total
            end
            after = available
        end
        offset = offset + length + eol + after
    end
    return offset
end

-- One P2P message (or malformed line) in `range`, parsed as `channel`.
local function dissect_message(range, pinfo, tree, channel, state)
    local s = range:len() > 0 and range:raw() or ""
    local item = tree:add(natchat, range)
    item:add(f.line, range, s)
    local msg, why
    if #s > MAX_LINE then
        why = "line longer than " .. MAX_LINE .. " bytes"
    else
        msg, why = parse(channel, s)
    end
    local text
    if msg then
        text = summary(msg)
        add_fields(item, range, msg)
    else
        text = "Malformed: " .. quote(s) .. " (" .. why .. ")"
        item:add_proto_expert_info(malformed, why)
    end
    item:append_text(": " .. text)
    info(pinfo, state, text)
    return msg
end

-- The server's port for this packet: the port Decode As or the preference matched.
local function server_port(pinfo)
    local m = pinfo.match_uint
    if m ~= 0 and (m == pinfo.src_port or m == pinfo.dst_port) then return m end
    return natchat.prefs.tcp_port
end

function natchat.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "NATCHAT"
    local state = { first = true }
    if pinfo.port_type == 3 then                      -- UDP: one datagram, no line ending
        local word = tvb:len() > 0 and tvb:raw():match("^[^ ]*") or ""
        local channel = MESSAGES.announce[word] and "announce"
            or MESSAGES.answer[word] and "answer" or "datagram"
        dissect_message(tvb(), pinfo, tree, channel, state)
        return tvb:len()
    end
    local to_server = pinfo.dst_port == server_port(pinfo)
    return for_each_line(tvb, pinfo, MAX_LINE, function(offset, length)
        dissect_message(tvb(offset, length), pinfo, tree, to_server and "request" or "event", state)
    end)
end

-- UDP on any port: a datagram whose first word and shape are natchat's.
local function heuristic_udp(tvb, pinfo, tree)
    if tvb:len() < 3 or tvb:len() > MAX_LINE then return false end
    local s = tvb:raw()
    local word = s:match("^[^ ]*")
    local channel = MESSAGES.announce[word] and "announce" or MESSAGES.answer[word] and "answer"
        or MESSAGES.datagram[word] and "datagram"
    if not channel or not parse(channel, s) then return false end
    natchat.dissector(tvb, pinfo, tree)
    return true
end

---------------------------------------------------------------------------------------------
-- The chat room: lines; `#upload <bytes> <name>` and the bytes that follow
---------------------------------------------------------------------------------------------
local r = {
    line   = ProtoField.string("natchat_room.line", "Line", base.UNICODE),
    kind   = ProtoField.string("natchat_room.kind", "Kind"),
    user   = ProtoField.string("natchat_room.user", "User"),
    text   = ProtoField.string("natchat_room.text", "Text", base.UNICODE),
    online = ProtoField.uint32("natchat_room.online", "Users online"),
    size   = ProtoField.uint64("natchat_room.upload.size", "File size"),
    name   = ProtoField.string("natchat_room.upload.name", "File name", base.UNICODE),
    data   = ProtoField.bytes("natchat_room.upload.data", "File data"),
}
room.fields = r
local room_malformed = ProtoExpert.new("natchat_room.malformed", "Malformed chat room line",
    expert.group.MALFORMED, expert.severity.ERROR)
room.experts = { room_malformed }
room.prefs.tcp_port = Pref.uint("Chat room port (TCP)", 8888, "The chat room server's port")

-- Server -> client lines: a pattern, the kind, and what its captures are.
local ROOM_LINES = {
    { "^Connected to the chat server %((%d+) users? online%)$", "connected", { "online" } },
    { "^New user (%S+) entered %((%d+) users? online%)$", "entered", { "user", "online" } },
    { "^The user (%S+) left %((%d+) users? online%)$", "left", { "user", "online" } },
    { "^User (%S+) has uploaded a file (.*) %((%d+) bytes%)$", "uploaded", { "user", "name", "size" } },
    { "^File (.*) has uploaded!$", "stored", { "name" } },
    { "^File (.*) is too large", "too large", { "name" } },
    { "^Usage: #upload ", "usage", {} },
    { "^The server could not store ", "not stored", {} },
    { "^Upload of (.*) failed", "upload failed", { "name" } },
    { "^The chat room is full %((%d+) users? online%)", "full", { "online" } },
    { "^Error: ", "error", {} },
    { "^%[You%] (.*)$", "echo", { "text" } },
    { "^%[([^%]]+)%] (.*)$", "message", { "user", "text" } },
}

-- An `#upload` header (src/room/upload.rs): its size and name, or nil and why not; not an
-- upload at all: nothing.
local function upload_header(s)
    local rest = s:match("^#upload(.*)$")
    if not rest or (rest ~= "" and not rest:find("^%s")) then return end
    rest = rest:match("^%s*(.-)%s*$")
    local bytes, name = rest:match("^([^ ]*) ?(.*)$")
    if not is_u64(bytes) then return nil, "bad #upload header: the server answers with Usage" end
    return { bytes = bytes, name = name:match("^%s*(.-)%s*$") }
end

local function add_captures(item, range, captures, names)
    for i, name in ipairs(names) do
        local value = captures[i]
        if name == "online" then item:add(r.online, range, tonumber(value))
        elseif name == "size" then item:add(r.size, range, u64(value))
        else item:add(r[name], range, value) end
    end
end

-- One line from a client; returns how many bytes of an upload follow it.
local function room_request(tvb, offset, length, eol, item, pinfo, state)
    local range = length > 0 and tvb(offset, length) or tvb(offset, 0)
    local s = length > 0 and range:raw() or ""
    if length > MAX_ROOM_LINE then
        item:add_proto_expert_info(room_malformed, "line longer than " .. MAX_ROOM_LINE .. " bytes")
        info(pinfo, state, "Malformed: line longer than " .. MAX_ROOM_LINE .. " bytes")
        return
    end
    local header, why = upload_header(s)
    if why then
        item:add(r.kind, range, "upload")
        item:add_proto_expert_info(room_malformed, why)
        info(pinfo, state, "Malformed: " .. quote(s) .. " (" .. why .. ")")
    elseif header then
        local size = tonumber(header.bytes)
        item:add(r.kind, range, "upload")
        item:add(r.size, range, u64(header.bytes))
        item:add(r.name, range, header.name)
        local start = offset + length + eol
        local have = math.min(size, tvb:len() - start)
        if have > 0 then item:add(r.data, tvb(start, have)) end
        item:set_len(length + eol + have)
        local text = "#upload " .. quote(header.name) .. " (" .. header.bytes .. " bytes)"
        item:append_text(": " .. text)
        info(pinfo, state, text)
        return size
    else
        item:add(r.kind, range, "message")
        item:add(r.text, range, s)
        item:append_text(": " .. quote(s))
        info(pinfo, state, "Message " .. quote(s))
    end
end

-- One line from the server.
local function room_event(range, item, pinfo, state)
    local s = range:len() > 0 and range:raw() or ""
    for _, line in ipairs(ROOM_LINES) do
        local captures = { s:match(line[1]) }
        if captures[1] then
            item:add(r.kind, range, line[2])
            add_captures(item, range, captures, line[3])
            break
        end
    end
    item:append_text(": " .. quote(s))
    info(pinfo, state, quote(s))
end

function room.dissector(tvb, pinfo, tree)
    pinfo.cols.protocol = "NATCHAT-ROOM"
    local state = { first = true }
    local m = pinfo.match_uint
    local port = (m ~= 0 and (m == pinfo.src_port or m == pinfo.dst_port)) and m or room.prefs.tcp_port
    local to_server = pinfo.dst_port == port
    return for_each_line(tvb, pinfo, MAX_ROOM_LINE, function(offset, length, eol)
        local item = tree:add(room, tvb(offset, length + eol))
        item:add(r.line, length > 0 and tvb(offset, length) or tvb(offset, 0),
            length > 0 and tvb(offset, length):raw() or "")
        if to_server then
            return room_request(tvb, offset, length, eol, item, pinfo, state)
        end
        room_event(length > 0 and tvb(offset, length) or tvb(offset, 0), item, pinfo, state)
    end)
end

---------------------------------------------------------------------------------------------
-- Registration: the ports, and the heuristics
---------------------------------------------------------------------------------------------
local registered = {}

local function register_ports()
    local tcp, udp = DissectorTable.get("tcp.port"), DissectorTable.get("udp.port")
    if registered.p2p then tcp:remove(registered.p2p, natchat); udp:remove(registered.p2p, natchat) end
    if registered.room then tcp:remove(registered.room, room) end
    registered.p2p, registered.room = natchat.prefs.tcp_port, room.prefs.tcp_port
    tcp:add(registered.p2p, natchat)
    udp:add(registered.p2p, natchat)
    tcp:add(registered.room, room)
end

natchat.prefs_changed = register_ports
room.prefs_changed = register_ports
register_ports()

natchat:register_heuristic("udp", heuristic_udp)
