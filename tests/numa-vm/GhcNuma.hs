-- A threaded Haskell program for the two-node VM (tests/numa-vm/run.sh):
-- run with +RTS -N2 --numa, each capability builds data on its own node,
-- then heap_nodes_check (ghc-heap-nodes.c) counts the heap's pages per node
-- with move_pages and prints PASS or FAIL lines for the VM's /init.
{-# LANGUAGE ForeignFunctionInterface #-}
import Control.Concurrent
import Control.Exception (evaluate)
import Control.Monad
import Foreign.C.Types
import System.Exit

foreign import ccall "heap_nodes_check" heapNodesCheck :: CInt -> IO CInt

-- Allocation that survives a few collections, on the calling capability.
work :: Int -> IO Int
work seed = do
  let xs = [seed .. seed + 200000] :: [Int]
  s <- evaluate (sum xs)
  l <- evaluate (length (show (take 20000 xs)))
  return (s + l)

main :: IO ()
main = do
  caps <- getNumCapabilities
  vars <- forM [0 .. caps - 1] $ \c -> do
    v <- newEmptyMVar
    _ <- forkOn c (work c >>= putMVar v)
    return v
  results <- mapM takeMVar vars
  ok <- heapNodesCheck (fromIntegral caps)
  putStrLn ("INFO ghc: " ++ show caps ++ " capabilities, results " ++ show (length results))
  if ok == 0 then exitSuccess else exitFailure
