-- Memory returned to the OS: builds a large structure, prints the memory
-- the process holds, drops the structure, collects, prints it again.
-- Each line: label, then Rss and LazyFree in kB, from
-- /proc/self/smaps_rollup (LazyFree: pages given back with MADV_FREE,
-- still counted in Rss until the kernel takes them).
import qualified Data.Map.Strict as M
import System.Mem (performMajorGC)

field :: String -> [String] -> Int
field name ls = case [ read v | (k : v : _) <- map words ls, k == name ++ ":" ] of
  (x : _) -> x
  [] -> 0

report :: String -> IO ()
report label = do
  s <- readFile "/proc/self/smaps_rollup"
  let ls = lines s
  length ls `seq` putStrLn (unwords [label, show (field "Rss" ls), show (field "LazyFree" ls)])

main :: IO ()
main = do
  let m = M.fromList [ (k, k) | k <- [1 .. 2000000 :: Int] ]
  print (M.size m)
  report "built"
  print (M.foldl' (+) 0 m)  -- the last use of m
  performMajorGC
  performMajorGC
  report "dropped"
