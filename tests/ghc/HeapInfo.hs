-- Prints the heap reservation the adapter made (libosmem builds only):
-- its base and size in bytes, through osmem_ghc_heap_reservation.
import Foreign.Marshal.Alloc (alloca)
import Foreign.Ptr (Ptr, ptrToWordPtr)
import Foreign.Storable (peek)
import Foreign.C.Types (CSize (..))

foreign import ccall unsafe "osmem_ghc_heap_reservation"
  heapReservation :: Ptr CSize -> IO (Ptr ())

main :: IO ()
main = alloca $ \sizePtr -> do
  base <- heapReservation sizePtr
  size <- peek sizePtr
  putStrLn (show (fromIntegral (ptrToWordPtr base) :: Integer) ++ " " ++ show (fromIntegral size :: Integer))
