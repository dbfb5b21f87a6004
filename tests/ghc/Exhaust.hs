-- Heap exhaustion: a list that stays live (its sum is taken after its
-- length) grows until the runtime runs out of memory. Run it under a small
-- `ulimit -v` and without -M: GHC's answer is "out of memory" and exit 251.
main :: IO ()
main = do
  let xs = [1 ..] :: [Integer]
  print (length (takeWhile (< 10 ^ (12 :: Int)) xs))
  print (sum (takeWhile (< 10 ^ (12 :: Int)) xs))
