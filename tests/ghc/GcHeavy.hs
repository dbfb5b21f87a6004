-- GC-heavy and deterministic: each round builds a Data.Map and lists of a
-- size that rises and falls, so the heap grows and shrinks across many
-- major collections (the runtime commits and decommits megablocks), and
-- prints a checksum that depends only on the arithmetic.
import Control.Monad (forM_, when)
import Data.List (foldl')
import qualified Data.Map.Strict as M
import System.Mem (performMajorGC)

roundSum :: Int -> Int
roundSum r = M.size m + M.foldl' (+) 0 m + foldl' (+) 0 evens
  where
    n = 15000 * (1 + r `mod` 5)
    m = M.fromList [ (k * 7919 `mod` 1000003, k * r) | k <- [1 .. n] ]
    evens = [ v `div` 3 | v <- M.elems m, even v ]

main :: IO ()
main = forM_ [1 .. 16 :: Int] $ \r -> do
  print (r, roundSum r)
  when (r `mod` 4 == 0) performMajorGC
