-- ack_claim: complete a batch of running tasks, then lease the next ones, in one call: a worker
-- whose slots wait for the attempts it just finished gets their successors in the same round
-- trip (one call per task at concurrency 1, where ack and claim were two). The two halves are
-- `ack` and `claim` themselves (their files, run here as the functions run_ack and run_claim),
-- so the transitions, their outbox entries and their replies are exactly theirs; the ack goes
-- first, so a concurrency limit sees the slots it frees.
--
-- KEYS[1] ready  KEYS[2] delayed  KEYS[3] active  KEYS[4] seq  KEYS[5] token  KEYS[6] outbox
-- KEYS[7] wake  KEYS[8] paused  KEYS[9] retry (the keys of claim, which hold the keys of ack)
-- ARGV[1] key prefix  ARGV[2] worker id  ARGV[3] max tasks  ARGV[4] lease (ms)  ARGV[5] promote
-- limit, then ack's quadruples (id, fencing token, log lines, result)
-- Returns: {ack's reply, claim's reply}
local ack_argv = {ARGV[1], ARGV[2]}
for i = 6, #ARGV do ack_argv[i - 3] = ARGV[i] end
local acked = run_ack({KEYS[3], KEYS[6], KEYS[1], KEYS[4], KEYS[7]}, ack_argv)
return {acked, run_claim(KEYS, ARGV)}
